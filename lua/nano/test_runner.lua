-- `nano-host test [busted args...]`: busted, in-process, with the nano core loaded (the host
-- exists, its loop is not running: nano.test and nano.client drive it). The exit code is busted's:
-- 0 when every spec passed, 1 on any failure or error.
--
-- `nano-host test --init [--force]` writes a .busted file so that plain `busted` runs the specs
-- under nano-host too (busted's `lua` option: busted re-runs itself as
-- `<lua> <busted script> --ignore-lua <args>`; here <lua> is `nano-host test`, which drops the
-- busted script argument), and a first spec when spec/ has none.
local core = require "nano.core"

local M = {}

local function file_exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

local function read_file(path, limit)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read(limit or "*a")
  f:close()
  return s
end

-- busted re-running itself under this "interpreter" passes its own script first.
local function is_busted_script(path)
  if type(path) ~= "string" or path:sub(1, 1) == "-" or path:match("%.lua$") then return false end
  local head = read_file(path, 4096)
  return head ~= nil and head:find("busted.runner", 1, true) ~= nil
end

-- The path of the running nano-host binary.
local function self_exe()
  local ok, ffi = pcall(require, "ffi")
  if not ok then return nil end
  pcall(ffi.cdef, "long readlink(const char *path, char *buf, size_t size);")
  local buf = ffi.new("char[?]", 4096)
  local n = tonumber(ffi.C.readlink("/proc/self/exe", buf, 4095))
  if not n or n <= 0 then return nil end
  return ffi.string(buf, n)
end

-- `nano-host` when that name on PATH is this binary, else the absolute path.
local function self_command()
  local exe = self_exe()
  if not exe then return "nano-host" end
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    local cand = dir .. "/nano-host"
    if file_exists(cand) then
      local p = io.popen("readlink -f '" .. cand:gsub("'", "'\\''") .. "'")
      local real = p and p:read("*l")
      if p then p:close() end
      if real == exe then return "nano-host" end
      break
    end
  end
  return exe
end

local BUSTED_FILE = [[
-- Written by `nano-host test --init`. Plain `busted` reads this file and re-runs itself under
-- nano-host (its `lua` option), so that specs get the nano core; `nano-host test` runs the same
-- specs directly. If nano-host moves, change `lua` to its new path.
return {
  _all = {
    lua = %q,
  },
  default = {
    ROOT = { "spec" },
  },
}
]]

local SAMPLE_SPEC = [[
-- Written by `nano-host test --init`: a first spec. Run it with `nano-host test` (or `busted`).
local nt = require "nano.test"

describe("main.lua", function()
  local server
  before_each(function() server = nt.start("main.lua") end) -- fresh server, script loaded
  after_each(function() server:stop() end)                  -- everything released

  it("accepts a client", function()
    local c = server:connect()            -- a real protocol client, handshake done
    assert.is_false(c:session():is_closed())
  end)
end)
]]

local function has_specs(dir)
  local p = io.popen("ls '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
  if not p then return false end
  local out = p:read("*a") or ""
  p:close()
  return out:find("_spec%.lua") ~= nil
end

local function write_file(path, text)
  local f, err = io.open(path, "w")
  if not f then return nil, err end
  f:write(text)
  f:close()
  return true
end

local function init(dir, args)
  local force = false
  for _, a in ipairs(args) do
    if a == "--force" then force = true end
  end
  local busted_path = dir .. "/.busted"
  if file_exists(busted_path) and not force then
    print("nano-host test --init: " .. busted_path .. " exists; left as is (--force rewrites it)")
  else
    local ok, err = write_file(busted_path, string.format(BUSTED_FILE, self_command() .. " test"))
    if not ok then
      io.stderr:write("nano-host test --init: ", tostring(err), "\n")
      return 1
    end
    print("nano-host test --init: wrote " .. busted_path)
  end
  if not has_specs(dir .. "/spec") then
    os.execute("mkdir -p '" .. (dir .. "/spec"):gsub("'", "'\\''") .. "'")
    local spec = dir .. "/spec/main_spec.lua"
    local ok, err = write_file(spec, SAMPLE_SPEC)
    if not ok then
      io.stderr:write("nano-host test --init: ", tostring(err), "\n")
      return 1
    end
    print("nano-host test --init: wrote " .. spec)
  end
  if not file_exists(dir .. "/main.lua") then
    print("nano-host test --init: no main.lua here yet; the specs start it (see docs/testing.md)")
  end
  return 0
end

-- Test output is the specs'; the host's info lines ("listening tcp://...") only with
-- `nano-host --log-level info test` (or --debug).
local function quiet_logs()
  for i = -1, -100, -1 do
    local a = arg and arg[i]
    if a == nil then break end
    if a == "--log-level" or a == "--debug" then return end
  end
  core.log_level(core.WARN)
end

function M.run(opts)
  local args = {}
  for i, a in ipairs(opts.args or {}) do args[i] = a end
  if args[1] == "--init" then return init(opts.script_dir or ".", args) end
  if is_busted_script(args[1]) then table.remove(args, 1) end
  -- this is already the interpreter busted would re-run itself under (.busted's `lua`)
  local has_ignore = false
  for _, a in ipairs(args) do
    if a == "--ignore-lua" then has_ignore = true end
  end
  if not has_ignore then table.insert(args, 1, "--ignore-lua") end
  quiet_logs()

  -- Loaded before busted takes its snapshot of package.loaded, so that its per-file insulation
  -- never unloads and reloads them (there is one host and one nano state per process).
  require "nano"
  require "nano.client"
  local nt = require "nano.test"

  args[0] = "nano-host test"
  _G.arg = args
  local runner = require "busted.runner"
  -- Busted names itself after its caller's file and, when that caller is a file, raises on
  -- failures instead of calling os.exit: so call it from a chunk "file" named "nano-host test",
  -- and our cleanup below still runs.
  local call = loadstring("(...)({ standalone = false })", "@nano-host test")
  local ok, err = pcall(call, runner)

  local cok, cerr = pcall(nt.stop)
  if not cok then io.stderr:write("nano-host test: stopping the last server: ", tostring(cerr), "\n") end
  require("nano.client").close_all()
  if ok then return cok and 0 or 1 end
  if err ~= nil then io.stderr:write("nano-host test: ", tostring(err), "\n") end
  return 1
end

return M
