"""The mobile payment account (SPEC 6): registry, accounts, credentials, operations, dialogues, outbox."""
