"""The audit chain's hash is computed by PostgreSQL from HMAC-SHA256's padded keys: the
same bytes as Python's ``hmac`` for every key length (a key longer than SHA-256's block
is hashed first)."""

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from infrastructure.audit import hmac_pads


@given(key=st.binary(min_size=1, max_size=200), message=st.binary(max_size=300))
def test_the_pads_give_the_hmac_of_the_key(key: bytes, message: bytes) -> None:
    ipad, opad = hmac_pads(key)
    inner = hashlib.sha256(ipad + message).digest()
    assert hashlib.sha256(opad + inner).digest() == hmac.new(key, message, hashlib.sha256).digest()
