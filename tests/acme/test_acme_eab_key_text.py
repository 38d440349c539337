"""EAB keys are pasted into command lines: their base64url text never starts with "-"."""

from __future__ import annotations

import base64
import uuid

from core import runtime
from core.application import _eab_context, _new_eab_credentials
from models import ApplicationProfile
from pki import sealing


def test_generated_eab_keys_never_start_with_a_dash(database_url: str) -> None:
    attachment = ApplicationProfile(id=uuid.uuid4())
    first_characters = set()
    for _ in range(640):  # a leading "-" would show up about ten times in this many draws
        _new_eab_credentials(attachment)
        assert attachment.acme_eab_hmac_encrypted is not None
        key = sealing.unseal(
            kek=runtime.kek(), sealed=attachment.acme_eab_hmac_encrypted, context=_eab_context(attachment)
        )
        assert len(key) == 32
        first_characters.add(base64.urlsafe_b64encode(key).decode()[0])
    assert "-" not in first_characters
    assert len(first_characters) > 40  # still spread over the alphabet
