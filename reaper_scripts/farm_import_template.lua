-- Loop Farm: import a farm template (its template.json) as tracks in the current project.
-- Sets the project tempo and time signature to the template's, adds one track per part with the
-- part's MIDI file as an item at the start, marks the loop as a region named after the template,
-- and selects it with repeat on, ready to put instruments on the tracks and audition.

local function fail(msg)
  reaper.ShowMessageBox(msg, "Loop Farm: import template", 0)
end

local got, path = reaper.GetUserFileNameForRead("", "Loop Farm: choose a template.json", "json")
if not got then return end
local f = io.open(path, "r")
if not f then return fail("Cannot read " .. path) end
local text = f:read("*a")
f:close()

-- template.json is written by the farm with sorted keys; only a few top-level fields are needed.
local bpm = tonumber(text:match('"bpm"%s*:%s*([%d%.]+)'))
local num, den = text:match('"meter"%s*:%s*"(%d+)/(%d+)"')
local bars = tonumber(text:match('"bars"%s*:%s*(%d+)'))
local id = text:match('"id"%s*:%s*"([^"]+)"')
if not (bpm and num and den and bars) then return fail(path .. " is not a farm template.json") end
num, den = tonumber(num), tonumber(den)
local parts_text = text:match('"parts"%s*:%s*(%b[])')
if not parts_text then return fail(path .. " lists no parts") end

local dir = path:match("^(.*)[/\\][^/\\]+$") or "."
local sep = package.config:sub(1, 1)
local loop_s = bars * (num * 4 / den) * 60 / bpm

reaper.Undo_BeginBlock()
reaper.PreventUIRefresh(1)
reaper.SetTempoTimeSigMarker(0, -1, 0, -1, -1, bpm, num, den, false)
for part in parts_text:gmatch("%b{}") do
  local name = part:match('"name"%s*:%s*"([^"]+)"')
  local midi = part:match('"midi"%s*:%s*"([^"]+)"')
  if name and midi then
    local index = reaper.CountTracks(0)
    reaper.InsertTrackAtIndex(index, true)
    local track = reaper.GetTrack(0, index)
    reaper.GetSetMediaTrackInfo_String(track, "P_NAME", (id or "template") .. " " .. name, true)
    reaper.SetOnlyTrackSelected(track)
    reaper.SetEditCurPos(0, false, false)
    reaper.InsertMedia(dir .. sep .. midi, 0)  -- 0: add to the selected track at the edit cursor
  end
end
reaper.AddProjectMarker(0, true, 0, loop_s, id or "template", -1)
reaper.GetSet_LoopTimeRange(true, true, 0, loop_s, false)
reaper.GetSetRepeat(1)
reaper.PreventUIRefresh(-1)
reaper.UpdateArrange()
reaper.Undo_EndBlock("Loop Farm: import template", -1)
