"""Contacts at rest: every contact (e-mail, phone, a reminder's address) in the state file is sealed.

:mod:`pipelines.contacts.vault` holds the keys (one 0600 file per *epoch* in
``<data>/keys/contacts/``) and seals and opens in batches; :func:`register_functions` gives
every state connection the SQL functions ``contact_seal``, ``contact_open``, ``contact_reseal``
and ``contact_epoch``, so the steps keep moving sealed values in set-based SQL and open them
only where a message is addressed. :mod:`pipelines.contacts.retention` erases contacts a
configured time after release by deleting their key (crypto-shredding). Quarantined drop lines
(``quarantine.original_line``) are sealed the same way and go with their night's live generation.
"""

from pipelines.contacts.vault import ContactVault, register_functions

__all__ = ["ContactVault", "register_functions"]
