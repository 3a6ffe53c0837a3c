-- wrk script of the serve benchmark's mixed load: 0.5% of requests ask for
-- /spin (10 ms of CPU in the worker, bench/hello-app.js), the rest for /.
-- Each thread draws from its own fixed seed, so that every server gets the
-- same sequence.
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(seed or 1)
end

function request()
  if math.random() < 0.005 then
    return wrk.format(nil, "/spin")
  end
  return wrk.format(nil, "/")
end
