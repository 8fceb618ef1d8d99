"""The load room: the one PBOC load engine (SPEC 1.4, 7.3) that every load path drives — the DD recharge
(orders) and the SIM wallet's air recharge, hall POS loads and waiting loads. ``pboc`` holds the card steps
(scripts, MAC1 → MAC2, TAC, GET TRANSACTION PROVE), ``lanes`` the group-commit lanes and the rounds every
state change of a load goes through, ``engine`` the steps that need both (durably *loading* before the MAC2
leaves, post on a verified TAC, the outcome of a proof)."""
