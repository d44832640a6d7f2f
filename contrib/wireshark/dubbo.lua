-- Wireshark/tshark dissector for the Dubbo 2 RPC protocol ("dubbo", Hessian 2 bodies), as
-- d11's services speak it (crates/dubbo). TCP port 20880.
--
--   tshark -X lua_script:contrib/wireshark/dubbo.lua -r capture.pcapng -Y dubbo
--   wireshark -X lua_script:contrib/wireshark/dubbo.lua capture.pcapng
--
-- It reads the 16-octet header and, in requests, the Hessian strings that start the body
-- (Dubbo version, service, service version, method, parameter types). Frames split over TCP
-- segments are reassembled; several frames in one segment are each shown.

local dubbo = Proto("dubbo", "Dubbo 2 RPC")

local f = dubbo.fields
f.magic = ProtoField.uint16("dubbo.magic", "Magic", base.HEX)
f.flags = ProtoField.uint8("dubbo.flags", "Flags", base.HEX)
f.request = ProtoField.bool("dubbo.request", "Request", 8, nil, 0x80)
f.twoway = ProtoField.bool("dubbo.twoway", "Two-way", 8, nil, 0x40)
f.event = ProtoField.bool("dubbo.event", "Event (heartbeat)", 8, nil, 0x20)
f.serialization = ProtoField.uint8("dubbo.serialization", "Serialization", base.DEC, { [2] = "Hessian 2" }, 0x1f)
f.status = ProtoField.uint8("dubbo.status", "Status", base.DEC, {
    [20] = "OK", [30] = "Client timeout", [31] = "Server timeout", [40] = "Bad request",
    [50] = "Bad response", [60] = "Service not found", [70] = "Service error",
    [80] = "Server error", [90] = "Client error" })
f.id = ProtoField.uint64("dubbo.id", "Request id", base.DEC)
f.length = ProtoField.uint32("dubbo.length", "Body length", base.DEC)
f.dubbo_version = ProtoField.string("dubbo.dubbo_version", "Dubbo version")
f.service = ProtoField.string("dubbo.service", "Service")
f.version = ProtoField.string("dubbo.version", "Service version")
f.method = ProtoField.string("dubbo.method", "Method")
f.types = ProtoField.string("dubbo.types", "Parameter types")

local HEADER = 16

-- A Hessian string at `off` (compact or 'S' final chunk); returns (string, next offset) or nil.
local function hessian_string(tvb, off, limit)
    if off >= limit then return nil end
    local code = tvb(off, 1):uint()
    local n, start
    if code <= 0x1f then
        n, start = code, off + 1
    elseif code >= 0x30 and code <= 0x33 then
        if off + 2 > limit then return nil end
        n, start = (code - 0x30) * 256 + tvb(off + 1, 1):uint(), off + 2
    elseif code == 0x53 then
        if off + 3 > limit then return nil end
        n, start = tvb(off + 1, 2):uint(), off + 3
    else
        return nil
    end
    -- n counts characters; walk UTF-8 to find the end.
    local pos = start
    for _ = 1, n do
        if pos >= limit then return nil end
        local b = tvb(pos, 1):uint()
        if b < 0x80 then pos = pos + 1
        elseif b >= 0xf0 then pos = pos + 4
        elseif b >= 0xe0 then pos = pos + 3
        else pos = pos + 2 end
    end
    if pos > limit then return nil end
    return tvb(start, pos - start):string(ENC_UTF_8), pos
end

local function dissect_one(tvb, pinfo, tree, off)
    local flags = tvb(off + 2, 1):uint()
    local len = tvb(off + 12, 4):uint()
    local t = tree:add(dubbo, tvb(off, HEADER + len))
    t:add(f.magic, tvb(off, 2))
    local fl = t:add(f.flags, tvb(off + 2, 1))
    fl:add(f.request, tvb(off + 2, 1))
    fl:add(f.twoway, tvb(off + 2, 1))
    fl:add(f.event, tvb(off + 2, 1))
    fl:add(f.serialization, tvb(off + 2, 1))
    t:add(f.status, tvb(off + 3, 1))
    t:add(f.id, tvb(off + 4, 8))
    t:add(f.length, tvb(off + 12, 4))
    local request = bit.band(flags, 0x80) ~= 0
    local event = bit.band(flags, 0x20) ~= 0
    local id = tvb(off + 4, 8):uint64()
    local info
    if event then
        info = (request and "Heartbeat" or "Heartbeat answer") .. " id=" .. tostring(id)
    elseif request then
        local limit = off + HEADER + len
        local pos = off + HEADER
        local names = { f.dubbo_version, f.service, f.version, f.method, f.types }
        local got = {}
        for i, field in ipairs(names) do
            local s, nxt = hessian_string(tvb, pos, limit)
            if not s then break end
            t:add(field, tvb(pos, nxt - pos), s)
            got[i] = s
            pos = nxt
        end
        info = "Request id=" .. tostring(id) .. " " .. (got[2] or "?") .. "." .. (got[4] or "?")
    else
        info = "Response id=" .. tostring(id) .. " status=" .. tvb(off + 3, 1):uint()
    end
    return info
end

function dubbo.dissector(tvb, pinfo, tree)
    local off = 0
    local infos = {}
    while off < tvb:len() do
        local left = tvb:len() - off
        if left < HEADER then
            pinfo.desegment_offset = off
            pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
            return
        end
        if tvb(off, 2):uint() ~= 0xdabb then
            return 0
        end
        local len = tvb(off + 12, 4):uint()
        if left < HEADER + len then
            pinfo.desegment_offset = off
            pinfo.desegment_len = HEADER + len - left
            return
        end
        infos[#infos + 1] = dissect_one(tvb, pinfo, tree, off)
        off = off + HEADER + len
    end
    pinfo.cols.protocol = "DUBBO"
    pinfo.cols.info = table.concat(infos, "; ")
    return off
end

DissectorTable.get("tcp.port"):add(20880, dubbo)
