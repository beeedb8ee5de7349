-- wrk pipelining for tools/bench/bench-http.sh (wrk's own pipeline example):
-- every write carries DEPTH requests and wrk waits for all their answers.
--   wrk -s pipeline.lua URL -- DEPTH      (default 16)
init = function(args)
   local depth = tonumber(args[1]) or 16
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format()
   end
   req = table.concat(r)
end

request = function()
   return req
end
