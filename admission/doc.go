// Package admission decides how much the upstream is given and in what
// order: a limit on the requests in flight at the upstream (Limit, learned
// from time to first byte, or fixed), a share of it kept for high priority
// (Reserve), and bounded wait queues, one per priority, to which every
// completion hands its slot (Gate). Nothing here knows about Caddy or
// HTTP.
//
// # The rules
//
// Each rule has a name (Rule) by which the lab turns it off to measure
// it; BENCHMARKS.md has what each buys. In the order they apply:
//
// The limit, each sampler step (Limit.Step, four a second). short is the
// step's mean time to first byte, long its long-run mean.
//
//  1. Gradient. limit ← 0.8·limit + 0.2·(limit·g + √limit), with
//     g = clamp(2·long/short, ½, 1). long ← long + (short − long)/40 only
//     in steps where nobody waited for a slot and short ≤ 2·long (a
//     load-dependent rise becomes the norm; the queue the limit allows
//     does not); halfway down at once when long > 2·short in a step of
//     4 first bytes or more. long is first set to the mean of the first
//     4 first bytes: one quick answer (a health check) would otherwise
//     set a norm that later first bytes can never reach, g = ½ for good,
//     and limit = 4, the fixed point of 0.8·L + 0.2·(L/2 + √L).
//  2. Slow start (slowstart). From a cold start until g first falls
//     below 1 or requests get stuck: limit ← 1.5·limit in a step where a
//     request waited for a slot and g = 1.
//  3. App-limited (applimited). The limit grows only while it binds: a
//     request found every slot taken, or in flight ≥ limit − √limit
//     (only below the measured capacity). An idle gateway cannot inflate
//     it and then let a surge through.
//  4. Stuck (stuck). stuck = requests that have held a slot longer than
//     2·long with no first byte yet (a queue inside the upstream, seen
//     before any first byte can say so). served = in flight − stuck, but
//     ≥ measured in a run of stuck steps or when the limit was probing
//     above measured (the probe found no more room, not less; a stuck
//     request may hold a slot just freed). limit ← min(limit, served,
//     max(gradient's, served now)), and measured ← served. Off when under
//     a quarter of those in flight have their first byte (answers sent
//     whole).
//  5. Full answers. The upstream answered 503, 429 or 529 with n others
//     in flight: limit ← min(limit, n), measured ← n.
//  6. Probe hold (probehold, probebackoff). For a hold after 4 or 5:
//     limit ≤ max(limit, measured) (a probe above it waits in the
//     upstream's queue) and, when cut, ≥ the requests served now (the
//     stuck ones' late first bytes are the queue 4 already counted).
//     hold = 15 s, doubled up to 2 min by each probe that finds no more
//     room, 15 s again once more is served.
//  7. Capacity rise (capacityrise). measured ← the fewest served at once
//     over a second in which more than measured were served throughout
//     (not one step's count: an answer the upstream finished still
//     counts until its last bytes pass the gateway).
//  8. Pressure cut (pressurecut). While the GPU level is tripped or the
//     circuit is not closed: limit ← max(0.9·limit, floor), floor = half
//     the limit when the pressure began; then slow start again.
//
// Then min ≤ limit ≤ max.
//
// The reserve, each sampler step (Reserve.Step; the Gate enforces it):
//
//  9. Turnover (turnover). No reserve while a wait of high's (max_wait,
//     or under an slo the shortest budget of any class learned, if
//     shorter: the one a freed slot must reach in time) passes with no
//     slot freed less often than once in 200: e^(−slots·wait/hold) <
//     1/200, hold = the mean hold of the requests that hold a slot
//     longer than the wait (Turnover). The hand-off then serves high in time.
//  10. Weigher (weigher). A medium or low request asking at most half the
//     mean answer length asked (max_tokens) is short, and may take the
//     reserve: it gives it back within a moment.
//  11. Guard (guard). While nothing is tripped the reserve is held too
//     when a high request came within a minute or short requests are
//     about (their demand, averaged over 2.5 s, ≥ 0.5 slots). Its size:
//     while shedding min(cap, shorts + 1); while guarding
//     min(shorts + 1, max(cap, limit/2)) + the probes above the measured
//     capacity; cap = high_reserve of the limit.
//
// The waits (the throttle's, on the Gate):
//
//  12. Wait budget (waitbudget). Under an slo a request waits at most
//     slo − its class's expected service time, and is refused at once
//     when more than 2 × budget × completions/s wait ahead of it.
//  13. High's budget (highbudget). High's budget is the slo less its
//     class's mean service time (at least 5% over it), not the mean + 2
//     standard deviations: a high request refused is late for certain,
//     one that waits longer is on time whenever its answer is not slower
//     than the mean.
//  14. Standing queue (standingqueue). A queue that has neither emptied
//     nor served a waiter within max_wait/4 for a whole max_wait is
//     standing (CoDel): it is served newest first (adaptive LIFO) and new
//     waits are max_wait/4, until it empties.
package admission
