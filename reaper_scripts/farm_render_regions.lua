-- Loop Farm: render the project's regions the farm way.
-- One 24-bit WAV per region, named after the region ($region), at the project sample rate (or
-- 44100 Hz), stereo, no render tail (a farm region already includes the patch's tail), into
-- <project directory>/renders; then checks that every region's file is there and says which are not.
-- These are the settings the farm writes into its batch projects (farm --rpp-only shows them).

local WAV24 = "ZXZhdxgAAQ=="  -- render format block: WAV ("evaw"), 24-bit PCM

local _, n_markers, n_regions = reaper.CountProjectMarkers(0)
if n_regions == 0 then
  reaper.ShowMessageBox("The project has no regions: one region per loop is what gets rendered.",
    "Loop Farm: render regions", 0)
  return
end
local sep = package.config:sub(1, 1)
local out_dir = reaper.GetProjectPath("") .. sep .. "renders"
reaper.RecursiveCreateDirectory(out_dir, 0)
local rate = reaper.GetSetProjectInfo(0, "PROJECT_SRATE", 0, false)
if rate == nil or rate <= 0 then rate = 44100 end

reaper.GetSetProjectInfo_String(0, "RENDER_FILE", out_dir, true)
reaper.GetSetProjectInfo_String(0, "RENDER_PATTERN", "$region", true)
reaper.GetSetProjectInfo_String(0, "RENDER_FORMAT", WAV24, true)
reaper.GetSetProjectInfo(0, "RENDER_SETTINGS", 0, true)      -- master mix
reaper.GetSetProjectInfo(0, "RENDER_BOUNDSFLAG", 3, true)    -- all project regions
reaper.GetSetProjectInfo(0, "RENDER_TAILFLAG", 0, true)
reaper.GetSetProjectInfo(0, "RENDER_CHANNELS", 2, true)
reaper.GetSetProjectInfo(0, "RENDER_SRATE", rate, true)
reaper.GetSetProjectInfo(0, "RENDER_ADDTOPROJ", 0, true)
reaper.Main_OnCommand(42230, 0)  -- render with these settings, close the dialog when done

local missing = {}
for i = 0, n_markers + n_regions - 1 do
  local _, isrgn, _, _, name = reaper.EnumProjectMarkers3(0, i)
  if isrgn and not reaper.file_exists(out_dir .. sep .. name .. ".wav") then
    missing[#missing + 1] = name
  end
end
if #missing > 0 then
  reaper.ShowMessageBox(#missing .. " region(s) have no file in " .. out_dir .. ":\n" ..
    table.concat(missing, "\n"), "Loop Farm: render regions", 0)
else
  reaper.ShowMessageBox(n_regions .. " region(s) rendered to " .. out_dir, "Loop Farm: render regions", 0)
end
