#!/usr/bin/env python3
# Where a callgrind profile's instructions go, per request: self cost summed by object (LuaJIT's
# library = interpreter, GC and C API, as Debian's build has no symbols; anonymous memory = code
# the JIT compiled; libuv; libc) and, for nano-host itself, by source file.
#   cg_breakdown.py CALLGRIND_FILE REQUESTS [TOP_FUNCTIONS]
# (callgrind_annotate 3.19 attributes everything to the caller of lua_pcall once LuaJIT switches
# stacks, hence this reader of the file format.)
import sys, re, collections
f = sys.argv[1]; count = int(sys.argv[2])
names = {'ob': {}, 'fl': {}, 'fn': {}}
def parse(kind, rest):
    m = re.match(r'\((\d+)\)(?: (.*))?', rest)
    if not m: return rest
    if m.group(2) is not None: names[kind][m.group(1)] = m.group(2)
    return names[kind].get(m.group(1), '?')
ob = fl = fn = '?'; fi = None
selfc = collections.Counter(); skip = False
for line in open(f):
    line = line.rstrip('\n')
    if not line: continue
    k, _, rest = line.partition('=')
    if k in ('ob','fl','fn','fi','fe','cob','cfi','cfl','cfn') and _:
        if k == 'ob': ob = parse('ob', rest)
        elif k == 'fl': fl = parse('fl', rest); fi = None
        elif k in ('fi','fe'): fi = parse('fl', rest)
        elif k == 'fn': fn = parse('fn', rest); fi = None
        elif k == 'cob': parse('ob', rest)
        elif k in ('cfi','cfl'): parse('fl', rest)
        elif k == 'cfn': parse('fn', rest)
        continue
    if k == 'calls': skip = True; continue
    if line[0] in '+-*0123456789':
        if skip: skip = False; continue
        parts = line.split()
        if len(parts) >= 2:
            selfc[(ob, fi or fl, fn)] += int(parts[1])
total = sum(selfc.values())
def cat(o, fl, fn):
    o2 = o.split('/')[-1]
    if 'luajit' in o2: return 'luajit runtime (interpreter, GC, lua_* API)'
    if o == '???' or o2 == '???': return 'JIT-compiled traces (mcode)'
    if 'libuv' in o2: return 'libuv'
    if 'libc.so' in o2: return 'libc (memcpy, malloc, ...)'
    if 'ld-linux' in o2: return 'ld.so'
    if 'nano-host' in o2:
        b = fl.split('/')[-1]
        return 'nano-host ' + b
    return o2
cats = collections.Counter()
for (o, fl, fn), c in selfc.items(): cats[cat(o, fl, fn)] += c
print(f"total {total} over {count} requests = {total/count:.0f}/req")
for k, c in cats.most_common(30): print(f"{c/count:8.0f}  {100*c/total:5.1f}%  {k}")
if len(sys.argv) > 3:
    print('--- top functions')
    for (o, fl, fn), c in selfc.most_common(int(sys.argv[3])):
        print(f"{c/count:8.0f}  {100*c/total:5.1f}%  {o.split('/')[-1]} {fl.split('/')[-1]}:{fn}")
