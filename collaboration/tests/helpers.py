"""Helpers for driving the consumer (the fixtures live in the root conftest)."""


async def close_all(*communicators):
    for communicator in communicators:
        await communicator.disconnect()


async def join(communicator, user_id: str, name: str = "User"):
    await communicator.send_json_to({"type": "join", "userId": user_id, "data": {"name": name}})
