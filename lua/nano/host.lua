-- What `nano-host` does with a script: load it, run the loop, shut down in order.
-- Called from core/main.c; the C side only creates the Lua state and the host.
local core = require "nano.core"
local nano = require "nano"

local M = {}

function M.main(opts)
  -- `nano-host --debug` set the core's flag; the Lua side (outbound logging, error text to
  -- clients) follows the same switch as nano.enable_debug().
  if core.config().debug then nano.enable_debug() end
  if not nano._load_main(opts.script, opts.script_dir, opts.args) then return 1 end
  nano._start({ watch = opts.watch })
  nano._console_start()
  core.run("default")
  nano._console_stop()
  nano._stopped()
  core.stop_timers() -- timers still running hold registry references: release them before exit
  return 0
end

function M.test(opts)
  return require("nano.test_runner").run(opts)
end

-- `nano-host new NAME` (lua/nano/new.lua)
function M.new(opts)
  return require("nano.new").run(opts.args or {})
end

return M
