-- The JSON serializer's empty-array marker: cjson alone encodes every empty table as {}, but a
-- list that happens to be empty must reach clients as [] (nano's chat sends {"members":[]}).
local json = require "nano.json"

describe("nano.json", function()
  it("encodes json.array of an empty table as []", function()
    assert.equal('{"members":[]}', json.marshal({ members = json.array({}) }))
  end)

  it("leaves a non-empty list as it is", function()
    assert.equal('{"members":[1,2]}', json.marshal({ members = json.array({ 1, 2 }) }))
  end)

  it("replaces every marker, nested or at the top", function()
    assert.equal("[]", json.marshal(json.empty_array))
    assert.same({ a = {}, b = { {}, 1 } }, json.unmarshal(json.marshal({ a = json.empty_array, b = { json.empty_array, 1 } })))
    assert.equal('[[],[],"x"]', json.marshal({ json.empty_array, json.empty_array, "x" }))
  end)

  it("cannot be imitated by a string from a client", function()
    local fake = "\0nano.empty_array.0000000000000000\0"
    local out = json.marshal({ content = fake })
    assert.equal(fake, json.unmarshal(out).content)
  end)

  it("still encodes a plain empty table as an object", function()
    assert.equal('{"t":{}}', json.marshal({ t = {} }))
  end)
end)
