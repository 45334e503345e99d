-- The chat history backends on real servers started here (nt.redis, nt.postgres): the newest 50
-- messages are kept, oldest first, and they are still there for the next process state (a fresh
-- nt.start and a new connection: what a restart of the chat server sees).
local nt = require "nano.test"

for _, backend in ipairs({ "redis", "pg" }) do
  describe("chat history in " .. backend, function()
    local url, srv
    setup(function()
      if backend == "redis" then url, srv = nt.redis() else url, srv = nt.postgres() end
    end)
    teardown(function() srv:stop() end)

    it("keeps the newest 50 messages, oldest first, across a restart", function()
      local server = nt.start("main.lua")
      server:run(function()
        local store = assert(require("history_" .. backend).open(url))
        for i = 1, 60 do assert(store:add({ from = "p" .. i % 3, content = "m" .. i })) end
        local last = assert(store:last(3))
        assert.same({ "m58", "m59", "m60" }, { last[1].content, last[2].content, last[3].content })
        store:close()
      end)
      server:stop()

      server = nt.start("main.lua") -- the next run of the chat server
      server:run(function()
        local store = assert(require("history_" .. backend).open(url))
        local all = assert(store:last(100))
        assert.equal(50, #all)
        assert.equal("m11", all[1].content)
        assert.equal("m60", all[50].content)
        assert.same({ from = "p0", content = "m60" }, all[50])
        store:close()
      end)
      server:stop()
    end)
  end)
end
