"""The stand-in's HTTP routes, one module per resource: `common` (the route tag, the JSON and
problem answers), `gate` (the middleware every /v1 call passes: auth, injected 5xx, the account's
limits), `creates` (creating a prediction), `predictions` (reading and canceling them), `models`
(models, versions, deployments, account, webhook secret), `files`, `delivery` (output downloads,
replicate.delivery's part) and `sim` (the private /_sim control routes). Each has its
`add_routes(router)`; replicate_sim.server puts them together in one app."""
