"""Demo data: a seller with a flow holding a buyer step, a buyer, and a live invitation between them.

The demo keys are derived from fixed strings so that `make run` can print them every time; they are
public, so demo data belongs in development databases only.
"""

import hashlib

from models.accounts import Account, ApiKey, User
from models.base import DomainError, digest_of, transaction
from models.flows import Flow
from models.invitations import Invitation, JoinToken
from onboards.config import Settings

SELLER_EMAIL, BUYER_EMAIL = "seller@example.com", "buyer@example.com"


def demo_key(who: str) -> str:
    return hashlib.sha1(f"onboards demo key for {who}".encode()).hexdigest()


def load_demo(settings: Settings) -> dict:
    """Loads the demo into an empty database (or finds it there) and describes it."""
    with transaction():
        seller_user = User.select().where(User.email == SELLER_EMAIL).first()
        if seller_user is None:
            if Account.select().exists():
                raise DomainError("the database holds other data: demo data is only loaded into an empty one")
            seller_user = _create(settings.sandbox)
        invitation = Invitation.select().where(Invitation.account == seller_user.account_id,
                                               Invitation.email == BUYER_EMAIL).order_by(Invitation.id.desc()).get()
        buyer_user = User.get(User.email == BUYER_EMAIL)
    base = f"http://{settings.host}:{settings.port}"
    seller_key, buyer_key = demo_key(SELLER_EMAIL), demo_key(BUYER_EMAIL)
    curl = (f"curl -s -u API:{buyer_key} -H 'Content-Type: application/json' "
            f"-d '{{\"invitation_id\": \"{invitation.id}\"}}' {base}/onboards")
    return {
        "seller": {"account_id": seller_user.account_id, "email": SELLER_EMAIL, "api_key": seller_key},
        "buyer": {"account_id": buyer_user.account_id, "email": BUYER_EMAIL, "api_key": buyer_key},
        "invitation_id": invitation.id, "curl": curl,
        "lines": [
            f"seller  {SELLER_EMAIL:20} account {seller_user.account_id}  API key {seller_key}",
            f"buyer   {BUYER_EMAIL:20} account {buyer_user.account_id}  API key {buyer_key}",
            f"invitation {invitation.id} ({invitation.status}) from the seller to {BUYER_EMAIL}",
            "", "Accept it as the buyer by creating the onboard:", curl,
        ],
    }


def join_lines(settings: Settings, invitation_id: str) -> list[str]:
    """A fresh join link of the demo invitation while it is pending (its secret is kept only as a digest, so
    the one before cannot be printed again: this one replaces it), and how to follow it in a browser."""
    with transaction():
        invitation = Invitation.get_by_id(invitation_id)
        if invitation.status != "pending":
            return []
        link = f"{settings.base_url}/join/{JoinToken.issue(invitation.id)}"
    mailbox = f" (its sign-in code: the sandbox mailbox, {settings.base_url}/sandbox/mail)" if settings.sandbox else ""
    return ["Or, in a browser, open the invitation's join link as the buyer" + mailbox + ":", link]


def _create(sandbox: bool) -> User:
    seller, seller_user, _ = Account.create_with_user("Acme Leads", SELLER_EMAIL, sandbox=sandbox)
    buyer, buyer_user, _ = Account.create_with_user("Bright Buyers", BUYER_EMAIL, sandbox=sandbox)
    for user in (seller_user, buyer_user):
        ApiKey.delete().where(ApiKey.user == user).execute()
        key = demo_key(user.email)
        ApiKey.create(user=user, prefix=key[:8], digest=digest_of(key))
    entity, _ = Invitation.send(seller_user, "recipient", BUYER_EMAIL, "Let's work together on solar leads.")
    Flow.create_from(seller.id, {"name": "Solar leads", "fields": ["first_name", "last_name", "email", "phone_1"],
                                 "steps": [{"type": "recipient", "entity": {"id": entity.id}, "enabled": False,
                                            "description": "Bright Buyers (invited)"}]})
    Flow.create_from(buyer.id, {"name": "Inbound solar", "fields": ["first_name", "email"]})
    return seller_user
