"""Shared conversations in memory: members and viewers, authors, the assistant switch
(SQLite and PostgreSQL)."""

from __future__ import annotations

from memory_testing import at, user_message

from contracts.rpc import (
    ConversationCreateRequest,
    ConversationDeleteRequest,
    ConversationGetRequest,
    ConversationListRequest,
    ConversationUpdateRequest,
    MembersRequest,
)
from memory import SqlConversationRepository, StoreOutcome

NOW = at(100)


def members(
    user: str, action: str = "list", member: str | None = None, role: str = "member"
) -> MembersRequest:
    return MembersRequest.model_validate(
        {
            "user_id": user,
            "conversation_id": "shared",
            "action": action,
            "member_id": member,
            "role": role,
        }
    )


async def test_members_see_send_and_leave_as_their_role_allows(
    repository: SqlConversationRepository,
) -> None:
    await repository.create_conversation(
        ConversationCreateRequest(user_id="alice", conversation_id="shared"), NOW
    )
    # Only the owner adds; the owner cannot be added; a stranger sees nothing.
    assert (await repository.members(members("bob", "add", "bob"), NOW)).conversation is None
    added = await repository.members(members("alice", "add", "bob"), NOW)
    await repository.members(members("alice", "add", "carol", "viewer"), at(101))
    by_member = await repository.members(members("bob", "add", "dave"), NOW)
    assert by_member.forbidden
    assert (await repository.members(members("alice", "add", "alice"), NOW)).unknown_member
    listed = await repository.members(members("carol"), NOW)
    assert [(m.user_id, m.role) for m in added.members] == [("alice", "owner"), ("bob", "member")]
    assert [(m.user_id, m.role) for m in listed.members] == [
        ("alice", "owner"),
        ("bob", "member"),
        ("carol", "viewer"),
    ]

    # A member's message is stored under the owner's account, with its author.
    stored = await repository.store_events(
        [
            user_message("shared", "m1", "hello from alice", seconds=102),
            user_message("shared", "m2", "hello from bob", seconds=103).model_copy(
                update={"author_id": "bob"}
            ),
        ]
    )
    assert stored == [StoreOutcome.STORED, StoreOutcome.STORED]
    read = await repository.get_conversation(
        ConversationGetRequest(user_id="carol", conversation_id="shared")
    )
    assert read.conversation is not None and read.conversation.role == "viewer"
    assert read.conversation.owner_id == "alice"
    assert [(m.user_id, m.content) for m in read.messages] == [
        ("alice", "hello from alice"),
        ("bob", "hello from bob"),
    ]
    stranger = ConversationGetRequest(user_id="mallory", conversation_id="shared")
    assert (await repository.get_conversation(stranger)).conversation is None

    # Listings show each caller's role.
    for user, role in (("alice", "owner"), ("bob", "member"), ("carol", "viewer")):
        page = await repository.list_conversations(ConversationListRequest(user_id=user))
        assert [(c.id, c.role) for c in page.conversations] == [("shared", role)]
    assert not (
        await repository.list_conversations(ConversationListRequest(user_id="mallory"))
    ).conversations

    # A member turns the assistant off; a viewer may not; the owner turns it on again.
    def switch(user: str, state: str) -> ConversationUpdateRequest:
        return ConversationUpdateRequest.model_validate(
            {"user_id": user, "conversation_id": "shared", "assistant": state}
        )

    off = await repository.update_conversation(switch("bob", "off"))
    assert off.conversation is not None and off.conversation.assistant == "off"
    refused = await repository.update_conversation(switch("carol", "on"))
    assert refused.forbidden
    unknown = await repository.update_conversation(switch("mallory", "on"))
    assert unknown.conversation is None and not unknown.forbidden
    again = await repository.get_conversation(
        ConversationGetRequest(user_id="alice", conversation_id="shared")
    )
    assert again.conversation is not None and again.conversation.assistant == "off"
    on = await repository.update_conversation(switch("alice", "on"))
    assert on.conversation is not None and on.conversation.assistant == "on"

    # A viewer leaves; the owner removes a member; a member cannot remove another.
    assert (await repository.members(members("bob", "remove", "carol"), NOW)).forbidden
    left = await repository.members(members("carol", "remove", "carol"), NOW)
    assert [m.user_id for m in left.members] == ["alice", "bob"]
    removed = await repository.members(members("alice", "remove", "bob"), NOW)
    assert [m.user_id for m in removed.members] == ["alice"]
    assert (await repository.members(members("alice", "remove", "bob"), NOW)).unknown_member
    assert (await repository.members(members("bob"), NOW)).conversation is None

    # Deleting stays the owner's, and takes the members with it.
    await repository.members(members("alice", "add", "bob"), NOW)
    by_bob = ConversationDeleteRequest(user_id="bob", conversation_id="shared")
    assert not (await repository.delete_conversation(by_bob, NOW)).deleted
    by_alice = ConversationDeleteRequest(user_id="alice", conversation_id="shared")
    assert (await repository.delete_conversation(by_alice, NOW)).deleted
    await repository.create_conversation(
        ConversationCreateRequest(user_id="mallory", conversation_id="shared"), at(200)
    )
    assert (await repository.members(members("bob"), NOW)).conversation is None
