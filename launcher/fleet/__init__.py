"""A models file planned as a fleet: which GPU(s) each model goes on, which are awake together, which wait (see
docs/placement.md). `fleet.plan.plan_fleet` is the library call of `launcher plan`."""
