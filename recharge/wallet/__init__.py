"""The SIM wallet room (SPEC 7): the RFID-SIM purse's keys and checks, request sequence numbers, POS terminals,
and the clearing of uploaded purchases."""
