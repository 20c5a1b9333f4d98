-- Loop Farm: save the selected track's FX chain as a farm patch.
-- Writes <patches>/<name>.RfxChain (the track's FX exactly as REAPER stores them, plugin state
-- included) and makes sure <patches>/<name>.toml names it under [reaper] fxchain. A new patch gets
-- a minimal TOML (roles asked for); the next `farm render`/`farm batch --backend reaper` uses it.
-- Same result as `farm patch pull NAME --track N`, without leaving REAPER.

local SECTION = "LoopFarm"

local function fail(msg)
  reaper.ShowMessageBox(msg, "Loop Farm: save FX chain", 0)
end

-- The track's <FXCHAIN> block without the window lines, as an .RfxChain file holds it.
local function chain_from_chunk(chunk)
  local out, depth, inside = {}, 0, false
  for raw in chunk:gmatch("[^\r\n]+") do
    local line = raw:match("^%s*(.-)%s*$")
    if not inside then
      if line == "<FXCHAIN" or line:match("^<FXCHAIN ") then inside, depth = true, 1 end
    else
      if line:sub(1, 1) == "<" then depth = depth + 1
      elseif line == ">" then depth = depth - 1 end
      if depth == 0 then break end
      local key = line:match("^(%S+)")
      local window = depth == 1 and (key == "WNDRECT" or key == "SHOW" or key == "LASTSEL" or key == "DOCKED")
      if not window then out[#out + 1] = line end
    end
  end
  return out
end

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

local function write_file(path, text)
  local tmp = path .. ".part"
  local f = assert(io.open(tmp, "w"))
  f:write(text)
  f:close()
  os.remove(path)
  assert(os.rename(tmp, path))
end

-- toml_text with [reaper] fxchain = "...", touching nothing else (as `farm patch pull` does).
local function with_reaper_fxchain(toml_text, entry)
  local lines = {}
  for line in (toml_text:gsub("\n$", "") .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  local header
  for i, line in ipairs(lines) do
    if line:match("^%s*(.-)%s*$") == "[reaper]" then header = i break end
  end
  if not header then
    return toml_text:gsub("\n*$", "") .. "\n\n[reaper]\n" .. entry .. "\n"
  end
  local stop = #lines + 1
  for i = header + 1, #lines do
    if lines[i]:match("^%s*%[") then stop = i break end
  end
  for i = header + 1, stop - 1 do
    if lines[i]:match("^%s*fxchain%s*=") then
      if lines[i]:match("^%s*(.-)%s*$") == entry then return toml_text end
      lines[i] = entry
      return table.concat(lines, "\n") .. "\n"
    end
  end
  table.insert(lines, header + 1, entry)
  return table.concat(lines, "\n") .. "\n"
end

local track = reaper.GetSelectedTrack(0, 0)
if not track then return fail("Select the track whose FX chain is the patch.") end
local ok, chunk = reaper.GetTrackStateChunk(track, "", false)
if not ok then return fail("REAPER returned no state for the selected track.") end
local lines = chain_from_chunk(chunk)
local has_plugin = false
for _, line in ipairs(lines) do
  if line:match("^<[A-Z_0-9]+") and not line:match("^<JS_SER") then has_plugin = true end
end
if not has_plugin then return fail("The selected track has no FX.") end

local dir = reaper.GetExtState(SECTION, "patches_dir")
local _, track_name = reaper.GetSetMediaTrackInfo_String(track, "P_NAME", "", false)
local default_name = (track_name ~= "" and track_name or "new-patch"):gsub("[^%w%._%-]+", "-")
local got, answer = reaper.GetUserInputs("Loop Farm: save FX chain as patch", 3,
  "Patch name,Patches directory,Roles (new patch; comma-free: pad chords),extrawidth=300",
  default_name .. "," .. dir .. ",")
if not got then return end
local name, patches_dir, roles = answer:match("^([^,]*),([^,]*),([^,]*)$")
if not name or not name:match("^[%w][%w%._%-]*$") then
  return fail("Patch names use letters, digits, '.', '_' and '-'.")
end
if patches_dir == "" then return fail("Give the farm's patches directory.") end
patches_dir = patches_dir:gsub("[/\\]$", "")
reaper.SetExtState(SECTION, "patches_dir", patches_dir, true)

local sep = package.config:sub(1, 1)
local chain_path = patches_dir .. sep .. name .. ".RfxChain"
local toml_path = patches_dir .. sep .. name .. ".toml"
write_file(chain_path, table.concat(lines, "\n") .. "\n")

local toml = read_file(toml_path)
local entry = 'fxchain = "' .. name .. '.RfxChain"'
if toml == nil then
  local role_list = {}
  for role in roles:gmatch("%S+") do role_list[#role_list + 1] = '"' .. role .. '"' end
  if #role_list == 0 then role_list = { '"pad"' } end
  write_file(toml_path, table.concat({
    "# Patch saved from REAPER: its sound is " .. name .. ".RfxChain.",
    "# [embedded] is the General MIDI stand-in used on machines without REAPER.",
    'name = "' .. name .. '"',
    "roles = [" .. table.concat(role_list, ", ") .. "]",
    "target_lufs = -16.0",
    "tail_s = 2.0",
    "",
    "[embedded]",
    'soundfont = "default"',
    "program = 0",
    "",
    "[reaper]",
    entry,
    "",
  }, "\n"))
else
  write_file(toml_path, with_reaper_fxchain(toml, entry))
end
reaper.ShowMessageBox("Saved " .. chain_path .. "\nThe next farm render with patch '" .. name ..
  "' uses it.\n(Run `farm patches " .. name .. "` to check the TOML.)", "Loop Farm", 0)
