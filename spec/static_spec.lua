-- The static files option of nano.listen, over raw HTTP on the real listener: a folder served at
-- the root must not hide the WebSocket path, and nothing outside the folder is reachable.
local nt = require "nano.test"
local tcp = require "nano.tcp"

local FIXTURE = "spec/fixtures/static/main.lua"
local UPGRADE = "Upgrade: websocket\r\nConnection: Upgrade\r\n"
  .. "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

describe("static files served at /", function()
  local server, port
  before_each(function()
    server = nt.start(FIXTURE)
    for _, l in ipairs(server:listeners()) do
      if l.websocket then port = tonumber(l.bound:match(":(%d+)$")) end
    end
  end)
  after_each(function() server:stop() end)

  -- Sends one raw request; returns the status code, the head and the body once the server has
  -- answered (the whole body by its Content-Length on a kept connection, closed the connection,
  -- or switched protocols).
  local function http(path, extra_headers, method)
    local got, done = {}, false
    local s = tcp.connect("127.0.0.1", port, function(st, event, arg)
      if event == "connect" then
        assert(st:write((method or "GET") .. " " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n" .. (extra_headers or "") .. "\r\n"))
      elseif event == "data" then
        got[#got + 1] = arg
      elseif event == "close" then
        done = true
      end
    end)
    server:wait_until(function()
      local text = table.concat(got)
      local head_end = text:find("\r\n\r\n", 1, true)
      if done or (text:match("^HTTP/1.1 101 ") and head_end) then return true end
      local length = head_end and tonumber(text:sub(1, head_end):match("\r\nContent%-Length: (%d+)"))
      if method == "HEAD" and head_end then length = 0 end
      return length and #text - head_end - 3 >= length
    end, nil, "the answer to GET " .. path)
    s:close()
    server:wait_until(function() return s:state() == "closed" end, nil, "the stream to close")
    local text = table.concat(got)
    local head, body = text:match("^(.-\r\n)\r\n(.*)$")
    return tonumber(text:match("^HTTP/1.1 (%d+)")), head, body
  end

  it("serves index.html at /", function()
    local status, head, body = http("/")
    assert.equal(200, status)
    assert.truthy(head:find("Content-Type: text/html; charset=utf-8", 1, true))
    assert.truthy(body:find("served from public/", 1, true))
  end)

  it("serves other files with their content type", function()
    local status, head, body = http("/style.css")
    assert.equal(200, status)
    assert.truthy(head:find("Content-Type: text/css; charset=utf-8", 1, true))
    assert.equal("body { color: #123; }\n", body)
  end)

  it("still upgrades the WebSocket path", function()
    local status, head = http("/nano", UPGRADE)
    assert.equal(101, status, head)
    assert.truthy(head:find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", 1, true))
  end)

  it("upgrades every path of the listener, with or without a trailing slash", function()
    for _, path in ipairs({ "/game", "/nano/", "/game/" }) do
      local status, head = http(path, UPGRADE)
      assert.equal(101, status, path .. ": " .. tostring(head))
    end
    assert.equal(404, (http("/other", UPGRADE)))
  end)

  it("answers HEAD with the headers GET would send and no body", function()
    local status, head, body = http("/style.css", nil, "HEAD")
    assert.equal(200, status)
    assert.truthy(head:find("Content-Length: 22", 1, true), head)
    assert.equal("", body)
  end)

  it("answers a plain GET on the WebSocket path as a bad upgrade, not as a missing file", function()
    assert.equal(400, (http("/nano")))
  end)

  it("streams a file bigger than the send limit in chunks as the queue drains", function()
    local f = assert(io.open("spec/fixtures/static/public/big.txt", "rb"))
    local whole = f:read("*a")
    f:close()
    assert.is_true(#whole > 1024, "the fixture is bigger than the limit set below")
    require("nano").configure({ send_limit = 1024 })
    local status, head, body = http("/big.txt")
    assert.equal(200, status)
    assert.truthy(head:find("Content-Length: " .. #whole, 1, true), head)
    assert.equal(whole, body)
  end)

  it("a connection still upgrading when its listener closes finishes safely", function()
    local core, nano = require "nano.core", require "nano"
    local id
    for _, l in ipairs(nano.listeners()) do if l.websocket then id = l.id end end
    local got, done = {}, false
    local st = tcp.connect("127.0.0.1", port, function(st, event, arg)
      if event == "connect" then assert(st:write("GET /nano HTTP/1.1\r\n"))
      elseif event == "data" then got[#got + 1] = arg
      elseif event == "close" then done = true end
    end)
    server:wait_until(function() return nano.stats().connections >= 1 end, nil, "the connection")
    assert.is_true(core.unlisten(id))
    core.run("nowait") -- the listener's handle closes; the connection keeps reading it
    assert(st:write("Host: x\r\n" .. UPGRADE .. "\r\n"))
    server:wait_until(function() return table.concat(got):find("\r\n\r\n", 1, true) or done end,
      nil, "the answer")
    assert.truthy(table.concat(got):match("^HTTP/1.1 101 "))
    st:close()
    server:wait_until(function() return st:state() == "closed" end, nil, "the stream to close")
  end)

  it("keeps everything outside the folder out of reach", function()
    for _, path in ipairs({ "/../main.lua", "/%2e%2e/main.lua", "/..%2fmain.lua", "/public/../main.lua" }) do
      local status, _, body = http(path)
      assert.equal(404, status, path)
      assert.is_nil(body:find("nano.listen", 1, true), path)
    end
  end)
end)
