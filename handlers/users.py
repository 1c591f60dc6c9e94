"""The authenticated user and their notification settings."""

from starlette.responses import Response

from handlers import if_match_digest, resource, unit_of_work
from models.accounts import User, UserSettings
from models.base import NotFound


def _own(token_info: dict, id: str) -> str:
    """The user id of the path, when it is the caller's: another user's settings are not found."""
    if id.lower() != token_info["sub"]:
        raise NotFound("user settings not found")
    return token_info["sub"]


@unit_of_work(write=False)
def get_user(token_info: dict) -> Response:
    return resource(User.get_by_id(token_info["sub"]).as_json())


@unit_of_work()
def create_user_settings(token_info: dict, body: dict) -> Response:
    return resource(UserSettings.create_for(token_info["sub"], body).as_json(), 201)


@unit_of_work(write=False)
def get_user_settings(token_info: dict, id: str) -> Response:
    return resource(UserSettings.of(_own(token_info, id)).as_json())


@unit_of_work()
def update_user_settings(token_info: dict, id: str, body: dict) -> Response:
    user_id = _own(token_info, id)
    if_match_digest(lambda: UserSettings.of(user_id, for_update=True).as_json())
    return resource(UserSettings.put_for(user_id, body).as_json())
