"""The join pages' model rules, on both databases: links, sign-in codes, sessions, decline and withdraw
(the last two through their API operations as well)."""

import hashlib
import re
from datetime import timedelta

import pytest

from models.accounts import ApiKey, User
from models.base import NotFound, transaction, utcnow
from models.invitations import Invitation, JoinToken, LinkGone
from models.join import CODE_TRIES, JoinSession, SignInCode, create_account
from tests.helpers import create_onboard, invite, join_token, outbox, seller_flow, sign_in_code


def find(token: str) -> Invitation:
    with transaction(write=False):
        return JoinToken.find(token)[1]


def gone_why(token: str) -> str:
    with pytest.raises(LinkGone) as gone:
        find(token)
    return gone.value.why


def test_a_link_is_a_secret_kept_as_its_digest_and_a_resend_replaces_it(client, seller):
    entity = invite(client, seller, "new@example.com")
    token = join_token(entity["invitation_id"])
    assert len(token) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", token)  # 256 bits, URL-safe
    with transaction(write=False):
        [row] = JoinToken.select().where(JoinToken.invitation_id == entity["invitation_id"])
    assert row.digest == hashlib.sha256(token.encode()).hexdigest() and token not in row.digest
    assert find(token).id == entity["invitation_id"]

    resent = client.put(f"/invitations/{entity['id']}/resend", headers=seller.auth)
    assert resent.status_code == 200, resent.text
    fresh = join_token(entity["invitation_id"])
    assert fresh != token and gone_why(token) == "replaced" and find(fresh).id == entity["invitation_id"]
    with pytest.raises(NotFound):
        find(token[:-1] + ("A" if token[-1] != "A" else "B"))


def test_a_link_expires_with_its_invitation(client, seller):
    entity = invite(client, seller, "new@example.com")
    with transaction():
        Invitation.update(expires_at=utcnow() - timedelta(seconds=1)).where(
            Invitation.id == entity["invitation_id"]).execute()
    assert gone_why(join_token(entity["invitation_id"])) == "expired"


def test_a_link_makes_one_account_and_no_key_before_the_key_page(client, seller):
    entity = invite(client, seller, "new@example.com")
    token = join_token(entity["invitation_id"])
    with transaction():
        user, invitation = create_account(token, "New Co", "Ann Example")
    assert (user.email, user.name, invitation.id) == ("new@example.com", "Ann Example", entity["invitation_id"])
    with transaction(write=False):
        assert not ApiKey.select().where(ApiKey.user == user.id).exists()
    assert gone_why(token) == "used"
    with pytest.raises(LinkGone), transaction():
        create_account(token, "Second Co", "Bob")
    with transaction(write=False):
        assert User.select().count() == 2  # the seller's and Ann's


def verify(email: str, code: str) -> User | None:
    with transaction():
        return SignInCode.verify(email, code)


def send(email: str) -> None:
    with transaction():
        SignInCode.send(email)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** 6:06d}"


def test_a_code_signs_in_once_and_wrong_tries_end_it(app, buyer):
    send(buyer.email.upper())
    code = sign_in_code(buyer.email)
    for _ in range(CODE_TRIES - 1):
        assert verify(buyer.email, wrong(code)) is None
    signed_in = verify(buyer.email, code)
    assert signed_in is not None and signed_in.id == buyer.user_id
    assert verify(buyer.email, code) is None  # spent

    send(buyer.email)
    code = sign_in_code(buyer.email)
    for _ in range(CODE_TRIES):
        assert verify(buyer.email, wrong(code)) is None
    assert verify(buyer.email, code) is None  # the fifth wrong try ended it


def test_a_code_expires_and_a_new_one_ends_the_old(app, buyer):
    send(buyer.email)
    first = second = sign_in_code(buyer.email)
    for _ in range(10):  # codes are random: one in a million repeats
        send(buyer.email)
        second = sign_in_code(buyer.email)
        if second != first:
            break
    assert verify(buyer.email, first) is None  # ended by the new one
    signed_in = verify(buyer.email, second)
    assert signed_in is not None and signed_in.id == buyer.user_id
    send(buyer.email)
    third = sign_in_code(buyer.email)
    with transaction():
        SignInCode.update(expires_at=utcnow() - timedelta(seconds=1)).execute()
    assert verify(buyer.email, third) is None  # expired


def test_no_code_goes_to_an_address_without_a_user(app):
    send("nobody@example.com")
    assert outbox("sign_in_code") == []


def test_sessions_are_digests_rotated_at_sign_in_and_show_the_first_key_once(app, buyer):
    with transaction():
        user = User.get_by_id(buyer.user_id)
        first = JoinSession.start(user, key_due=True)
        second = JoinSession.start(user, key_due=True, replacing=first)
    with transaction():
        assert JoinSession.of(first) is None
        session = JoinSession.of(second)
        assert session is not None and session.user_id == buyer.user_id and second not in session.digest
        key = session.take_key()
        assert key and session.take_key() is None
        principal = ApiKey.authenticate(key)
        assert principal is not None and principal.user_id == buyer.user_id
        JoinSession.update(expires_at=utcnow() - timedelta(seconds=1)).execute()
        assert JoinSession.of(second) is None


def test_the_invitee_declines_and_the_inviter_is_told(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    flow = seller_flow(client, seller, entity["id"])
    token = join_token(entity["invitation_id"])
    url = f"/invitations/{entity['invitation_id']}/decline"
    assert client.post(url, headers=seller.auth).status_code == 409  # the inviter withdraws instead

    declined = client.post(url, headers=buyer.auth)
    assert declined.status_code == 204, declined.text
    assert client.get(f"/invitations/{entity['invitation_id']}", headers=seller.auth).status_code == 404
    assert client.get(f"/entities/{entity['id']}", headers=seller.auth).status_code == 404
    assert client.get(f"/flows/{flow['id']}", headers=seller.auth).json()["steps"] == []
    assert client.get("/connections", headers=seller.auth).json() == []
    assert gone_why(token) == "declined"
    [told] = outbox("invitation_declined")
    assert (told.to, told.invitation_id) == (seller.email, entity["invitation_id"]) and buyer.email in told.body
    assert client.post(url, headers=buyer.auth).status_code == 404


def test_the_inviter_withdraws_an_invitation_not_accepted_yet(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    token = join_token(entity["invitation_id"])
    url = f"/invitations/{entity['invitation_id']}"
    assert client.delete(url, headers=buyer.auth).status_code == 409  # the invitee declines instead
    withdrawn = client.delete(url, headers=seller.auth)
    assert withdrawn.status_code == 204, withdrawn.text
    assert client.get(url, headers=seller.auth).status_code == 404
    assert gone_why(token) == "withdrawn"
    assert outbox("invitation_declined") == []


def test_an_accepted_invitation_is_neither_declined_nor_withdrawn(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    onboard = create_onboard(client, buyer, entity["invitation_id"])
    url = f"/invitations/{entity['invitation_id']}"
    assert client.post(f"{url}/decline", headers=buyer.auth).status_code == 409
    assert client.delete(url, headers=seller.auth).status_code == 409
    assert client.get(f"/onboards/{onboard['id']}", headers=buyer.auth).status_code == 200
    assert gone_why(join_token(entity["invitation_id"])) == "used"
