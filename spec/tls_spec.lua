-- TLS from Lua: a listener with tls, nano.client over it (verifying the certificate or not), and
-- nano.listen's errors for files that are missing, not PEM, or a key that does not match.
local nt = require "nano.test"
local nano = require "nano"

local function sh(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  assert(ok == 0 or ok == true, "failed: " .. cmd)
end

local dir = os.tmpname()
os.remove(dir)
sh("mkdir -p " .. dir)
local function make(name)
  sh(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s/%s.key "
    .. "-out %s/%s.crt -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1")
    :format(dir, name, dir, name))
end
make("a")
make("b")
sh(("cp %s/a.crt %s/cert.pem && cp %s/a.key %s/key.pem"):format(dir, dir, dir, dir))

describe("TLS", function()
  local server
  teardown(function() sh("rm -rf " .. dir) end)
  after_each(function() if server then server:stop() end server = nil end)

  local function start() return nt.start("spec/fixtures/tls/main.lua", { args = { dir } }) end

  it("nano.client talks to a TLS listener, verifying the certificate", function()
    server = start()
    local c = server:connect({ tls = { ca = dir .. "/a.crt", server_name = "localhost" } })
    assert.same({ pong = 1 }, c:request("Echo.ping", { n = 1 }))
  end)

  it("a client that does not trust the certificate fails to connect, with the reason", function()
    server = start()
    local ok, err = pcall(server.connect, server, { tls = { ca = dir .. "/b.crt" }, timeout = 2 })
    assert.is_false(ok)
    assert.matches("tls: handshake", err)
  end)

  it("verify = false accepts a self-signed certificate", function()
    server = start()
    local c = server:connect({ tls = { verify = false } })
    assert.same({ pong = 2 }, c:request("Echo.ping", { n = 2 }))
  end)

  it("plain clients still use the plain listener", function()
    server = start()
    local c = server:connect()
    assert.same({ pong = 3 }, c:request("Echo.ping", { n = 3 }))
  end)

  describe("nano.listen errors", function()
    before_each(function() server = start() end)
    local function listen_err(tls)
      local ok, err = pcall(nano.listen, "127.0.0.1:0", { tls = tls })
      assert.is_false(ok)
      return err
    end

    it("names a missing file", function()
      local err = listen_err({ cert = dir .. "/none.pem", key = dir .. "/a.key" })
      assert.matches("certificate " .. dir .. "/none.pem: No such file", err, 1, true)
    end)

    it("names a file that is not a certificate", function()
      local err = listen_err({ cert = dir .. "/a.key", key = dir .. "/a.key" })
      assert.matches("certificate " .. dir .. "/a.key: ", err, 1, true)
    end)

    it("says when the key does not match the certificate", function()
      local err = listen_err({ cert = dir .. "/a.crt", key = dir .. "/b.key" })
      assert.matches("does not match certificate", err, 1, true)
    end)

    it("asks for both cert and key", function()
      local err = listen_err({ cert = dir .. "/a.crt" })
      assert.matches("tls: expected { cert", err, 1, true)
    end)
  end)
end)
