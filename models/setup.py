"""The buyer delivery setup: six steps that succeed or fail together."""

from models.accounts import Account
from models.base import DomainError, NotFound, locked, new_short_id, utcnow
from models.connections import Connection
from models.entities import Entity
from models.flows import DEFAULT_SOURCE_MODULE, Flow, is_step_for
from models.invitations import NotAccepted
from models.outbox import OutboxMessage

MAX_SOURCES = MAX_MAPPINGS = 100  # the spec's maxItems: a flow must stay readable through the API


class SetupError(DomainError):
    """A buyer setup that cannot finish; the caller's transaction (or savepoint) undoes it."""


class AlreadySetUp(SetupError):
    """The connection's buyer delivery is set up already (by the buyer's setup request): nothing is left to run."""



class FlowFull(SetupError):
    """A flow the setup would add to holds the most sources or mappings the spec allows already."""


def setup_buyer_delivery(buyer_id: str, connection_id: str, flow_id: str | None) -> Flow:
    """Runs the six steps for `buyer_id` and returns the buyer flow. Call inside a transaction."""
    connection = _claim_connection(buyer_id, connection_id)
    seller, buyer_entity, seller_entity = connection.seller, connection.buyer_entity, connection.seller_entity
    if seller is None or buyer_entity is None or seller_entity is None:
        raise NotAccepted("the invited seller has not accepted the invitation yet")
    # Locked (in id order, so two setups cannot deadlock on them): a concurrent change to the same
    # flow waits for this transaction instead of overwriting its steps.
    seller_flows = [f for f in locked(Flow.for_account(seller.id).order_by(Flow.id)) if f.steps_for(buyer_entity.id)]
    buyer_flow = _buyer_flow(buyer_id, seller_entity, flow_id)
    for flow in seller_flows:
        _map_buyer_flow(flow, buyer_entity, buyer_flow.id)
    buyer: Account = Account.get_by_id(buyer_id)
    OutboxMessage.enqueue(
        "buyer_delivery_set_up", seller.user_emails(), f"{buyer.name} is ready to receive your leads",
        f"{buyer.name} finished setting up delivery for your connection {connection.id}.\n"
        f"{len(seller_flows)} of your flows now deliver to their flow {buyer_flow.id}; "
        "their buyer steps are enabled.\n", connection_id=connection.id)
    return buyer_flow


def _claim_connection(buyer_id: str, connection_id: str) -> Connection:
    """Steps 1 and 6: the connection is the buyer's and not set up yet; the flag is set here, by a
    conditional update, so that of two concurrent setups exactly one goes on."""
    connection = Connection.select().where(Connection.id == connection_id, Connection.buyer == buyer_id).first()
    if connection is None:
        raise NotFound("connection not found")
    claimed = Connection.update(has_setup_buyer_delivery=True, updated_at=utcnow()).where(
        Connection.id == connection.id, Connection.has_setup_buyer_delivery == False  # noqa: E712 (SQL)
    ).execute()
    if not claimed:
        raise AlreadySetUp("buyer delivery is already set up for this connection")
    return connection


def _buyer_flow(buyer_id: str, seller_entity: Entity, flow_id: str | None) -> Flow:
    """Step 3: the chosen flow, or a new minimal one, gets the seller as a source."""
    if flow_id:
        flow = Flow.get_for_account(buyer_id, flow_id, for_update=True)
    else:
        # An entity's name may be as long as a flow's: the new flow's name is cut to fit.
        flow = Flow.create(account=buyer_id, name=f"Leads from {seller_entity.name}"[:Flow.name.max_length])
    if not any(s["entity"]["id"] == seller_entity.id for s in flow.sources):
        if len(flow.sources) >= MAX_SOURCES:
            raise FlowFull(f"flow {flow.id} already has {MAX_SOURCES} sources")
        flow.sources = [*flow.sources, {
            "id": new_short_id(), "entity": seller_entity.summary(),
            "integration": {"module_id": DEFAULT_SOURCE_MODULE, "mappings": []}, "enabled": True}]
        flow.save_changes()
    return flow


def _map_buyer_flow(flow: Flow, buyer_entity: Entity, buyer_flow_id: str) -> None:
    """Step 4: each buyer step of a seller flow delivers to the buyer flow, is enabled, and shows
    the buyer's account name (the step was made when the entity still bore the invited address)."""
    steps = []
    for step in flow.steps:
        if is_step_for(step, buyer_entity.id):
            mappings = [m for m in step["integration"]["mappings"] if m["property"] != "flow_id"]
            if len(mappings) >= MAX_MAPPINGS:
                raise FlowFull(f"a buyer step of flow {flow.id} already has {MAX_MAPPINGS} mappings")
            mapping = {"id": new_short_id(), "property": "flow_id", "value": buyer_flow_id}
            step = {**step, "enabled": True, "entity": buyer_entity.summary(),
                    "integration": {**step["integration"], "mappings": [*mappings, mapping]}}
        steps.append(step)
    flow.steps = steps
    flow.save_changes()

