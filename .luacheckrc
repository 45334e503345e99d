-- luacheck (Debian lua-check) over lua/, spec/ and examples/: CTest's `luacheck` runs it.
std = "luajit"
unused_args = false        -- handlers take (self, session, msg) whether they use them or not
max_line_length = false    -- the house style wraps by sense, not at a column
read_globals = { "package.nano_lua_dir" } -- set by nano-host (core/main.c): where lua/nano/ is
files["spec"] = { std = "+busted" }
files["examples/*/spec"] = { std = "+busted" }
files["spec/fixtures/userproject/spec"] = { std = "+busted" }
