"""The KaKaTong card service room (SPEC 3): one module a concern, channels import ``service``.

``codes`` return codes and texts · ``table`` the trade table · ``messages`` requests, results,
refusals · ``transaction`` the one transaction helper · ``reference`` the reference-data cache ·
``gateway`` license, network and terminal checks · ``checks`` card number, amount, card row,
acceptance, state · ``passwords`` password checks and lockout · ``moves`` ledger accounts and
transfers · ``journal`` Stance, journal row, REQID answers · ``trades`` the trade table's
trades · ``reversals`` cancels and 0400 · ``card_admin`` activation, passwords, bindings, holder
information · ``history`` tSRequest · ``cards`` card numbers, password hashing, operator writes ·
``sms`` and ``sms_channel`` SMS commands · ``service`` the names channels call.
"""
