-- `nano-host new NAME`: a project skeleton that already passes its tests.
--
--   NAME/main.lua              one component (Hello) and a WebSocket listener that serves web/
--   NAME/spec/hello_spec.lua   a spec against the real core (nano.test), passing as written
--   NAME/.busted               so that plain `busted` runs the specs under nano-host too
--   NAME/web/index.html        a page that connects and calls hello.greet
--   NAME/web/nano-client.js    the protocol client the examples use, copied from the installed tree
--   NAME/README.md             the three commands: run, test, reload
--
-- Refuses to write into a path that exists (file or folder): nothing of the user's is overwritten.
local M = {}

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  -- a folder io.open cannot open for reading on some systems: ask the shell
  local r = os.execute("test -e " .. quote(path))
  return r == 0 or r == true
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, text)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(text)
  f:close()
  return true
end

-- The browser client: installed next to the Lua tree (share/nano-host/web), or the examples' copy
-- when nano-host runs from its build tree.
local function client_js()
  local lua_dir = package.nano_lua_dir or "."
  for _, p in ipairs({ lua_dir .. "/../web/nano-client.js",
                       lua_dir .. "/../examples/chat/web/nano-client.js" }) do
    local s = read(p)
    if s then return s end
  end
  return nil, "nano-client.js not found next to " .. lua_dir
end

local MAIN = [[
-- %s: a nano-host game server. Run it with `nano-host main.lua`, then open
-- http://127.0.0.1:3250/ (NANO_ADDR changes the address, e.g. NANO_ADDR=:8080).
local nano = require "nano"

-- A component: its functions are handlers, reached by route "hello.<function>" and called
-- (self, session, payload). A request's return value is its response.
local Hello = {}

function Hello:greet(session, msg)
  local name = type(msg) == "table" and msg.name or nil
  if type(name) ~= "string" or name == "" then
    error({ code = 400, msg = "name is required" }) -- an error response the client sees
  end
  return { text = "Hello, " .. name .. "!", session = session:id() }
end

nano.register(Hello, { name = "hello" })

-- One port for the page and its socket: browsers get web/ at /, clients upgrade on /nano.
nano.listen(os.getenv("NANO_ADDR") or "127.0.0.1:3250", {
  websocket = true,
  path = "/nano",
  static = { ["/"] = "web" }, -- relative to this file
})
]]

local SPEC = [[
-- Specs run against the real core: `nano-host test` (or `busted`, see .busted).
local nt = require "nano.test"

describe("hello.greet", function()
  local server
  before_each(function() server = nt.start("main.lua") end) -- a fresh server per spec
  after_each(function() server:stop() end)

  it("greets by name", function()
    local c = server:connect() -- a protocol client, handshake done
    local res = c:request("hello.greet", { name = "Ada" })
    assert.equal("Hello, Ada!", res.text)
  end)

  it("answers a request without a name with error 400", function()
    local c = server:connect()
    local res, err = c:try_request("hello.greet", {})
    assert.is_nil(res)
    assert.equal(400, err.code)
  end)
end)
]]

local BUSTED = [[
-- Plain `busted` reads this file and re-runs itself under nano-host (its `lua` option), so that
-- specs get the nano core; `nano-host test` runs the same specs directly.
return {
  _all = { lua = "nano-host test" },
  default = { ROOT = { "spec" } },
}
]]

local INDEX = [[
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>%s</title>
  <link rel="icon" href="data:,">
</head>
<body>
  <h1>%s</h1>
  <p id="status">connecting…</p>
  <form id="form">
    <input id="name" value="world" aria-label="name">
    <button type="submit" disabled>hello.greet</button>
  </form>
  <pre id="out"></pre>
  <script src="nano-client.js"></script>
  <script>
    const status = document.getElementById('status');
    const out = document.getElementById('out');
    const button = document.querySelector('button');
    const client = new NanoClient();
    client.on('close', () => { status.textContent = 'disconnected'; button.disabled = true; });
    client.connect('ws://' + location.host + '/nano').then(() => {
      status.textContent = 'connected';
      button.disabled = false;
    }, (err) => { status.textContent = 'cannot connect: ' + err.message; });
    document.getElementById('form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        const res = await client.request('hello.greet', { name: document.getElementById('name').value });
        out.textContent = JSON.stringify(res);
      } catch (err) {
        out.textContent = 'error: ' + err.message;
      }
    });
  </script>
</body>
</html>
]]

local README = [[
# %s

A game server on [nano-host](https://github.com/): `main.lua` registers the `hello` component and
listens on 127.0.0.1:3250 (WebSocket on `/nano`, the page in `web/` on `/`).

    nano-host main.lua            # run it, then open http://127.0.0.1:3250/
    nano-host test                # run the specs in spec/
    kill -HUP <pid>               # reload the scripts without dropping anyone
                                  # (or run with `nano-host --watch main.lua`)

`NANO_ADDR=:8080 nano-host main.lua` listens elsewhere.
]]

local function html_escape(s)
  return (s:gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }))
end

function M.run(args)
  local name = args[1]
  if not name or name == "" or args[2] then
    io.stderr:write("usage: nano-host new NAME\n")
    return 2
  end
  if exists(name) then
    io.stderr:write("nano-host new: ", name, " exists; refusing to overwrite it\n")
    return 1
  end
  local js, jerr = client_js()
  if not js then
    io.stderr:write("nano-host new: ", jerr, "\n")
    return 1
  end
  local base = name:gsub("/+$", ""):match("([^/]+)$") or name
  local title = html_escape(base)
  local r = os.execute("mkdir -p " .. quote(name .. "/spec") .. " " .. quote(name .. "/web"))
  if r ~= 0 and r ~= true then
    io.stderr:write("nano-host new: cannot create ", name, "\n")
    return 1
  end
  local files = {
    { "main.lua", MAIN:format(base) },
    { "spec/hello_spec.lua", SPEC },
    { ".busted", BUSTED },
    { "web/index.html", INDEX:format(title, title) },
    { "web/nano-client.js", js },
    { "README.md", README:format(base) },
  }
  for _, f in ipairs(files) do
    local ok, err = write(name .. "/" .. f[1], f[2])
    if not ok then
      io.stderr:write("nano-host new: ", tostring(err), "\n")
      return 1
    end
  end
  print("nano-host new: created " .. name .. "/")
  print("  cd " .. name .. " && nano-host test      # the specs pass")
  print("  nano-host main.lua                # then open http://127.0.0.1:3250/")
  return 0
end

return M
