-- wrk: each request carries the next key of the file named by TOLLGATE_BENCH_KEYS, in turn.
local keys = {}
for line in io.lines(os.getenv('TOLLGATE_BENCH_KEYS')) do keys[#keys + 1] = line end
local i = 0
request = function()
  i = i % #keys + 1
  wrk.headers['x-api-key'] = keys[i]
  return wrk.format(nil)
end
dofile(os.getenv('TOLLGATE_BENCH_REPORT'))
