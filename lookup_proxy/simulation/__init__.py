"""A simulated store chain's lookups with known ground truth, for judging a policy.

Real logs have no ground truth (the 2021 abuse was found by a whistle-blower, not by reading
logs), so a policy is judged on simulated months: honest clerks serving queues, corporate reps
walking a business's lines, and planted insiders whose every malicious lookup is known. The
package is what ``bench/simulate.py`` writes files from and what ``lookup-proxy red-team`` mixes
its adversary into; every random choice comes from generators seeded by (seed, purpose,
employee, day), so a run is reproducible bit for bit.

Modules, each one concept: ``number_space`` (the 010 numbers, spellings, typos),
``customer_book`` (who is a customer), ``contracts`` (file layouts, actors, threat names),
``roster`` (stores, regions, shifts, who attacks), ``workday`` (shifts and human pacing),
``world`` (customers and calendar shared by all), ``honest`` (honest work), ``campaigns``
(classic threat classes), ``informed`` (policy-aware insiders), ``month`` (a month, day by day,
and its files).
"""
