"""personal memory's full-text index of exchanges (a question and its complete reply)

SQLite: an FTS5 table `exchange_search`, one row per complete reply (its rowid the
reply's), holding the question and the reply, owner and conversation as tokens and
the reply's key. PostgreSQL: a `search` tsvector on each complete reply's row (the question and
the reply), with a GIN index. Triggers keep both in the transaction of each message
write and delete (deleted conversations cascade); the existing exchanges are indexed
here.

Revision ID: 0010_fulltext
Revises: 0009_attachments
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_fulltext"
down_revision: str | None = "0009_attachments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Characters of a question and of a reply indexed (a PostgreSQL tsvector holds < 1 MB).
_CHARS = 50_000


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgresql()
    else:
        _upgrade_sqlite()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER exchange_search_question ON messages")
        op.execute("DROP TRIGGER exchange_search_reply ON messages")
        op.execute("DROP FUNCTION exchange_search_question()")
        op.execute("DROP FUNCTION exchange_search_reply()")
        op.execute("DROP INDEX ix_messages_search")
        op.execute("ALTER TABLE messages DROP COLUMN search")
    else:
        for trigger in ("reply_insert", "reply_update", "question_insert", "delete"):
            op.execute(f"DROP TRIGGER exchange_search_{trigger}")
        op.execute("DROP TABLE exchange_search")


# --- SQLite -------------------------------------------------------------------------

# The index row of the complete reply `{r}` to the user message `{q}` (the statement's
# other tables), in conversation `c`: its owner and conversation are one token each
# (u and c, then the hex of the id), searched with the words.
_SQLITE_ROW = f"""
    INSERT INTO exchange_search(rowid, body, owner, conversation_id, answer_id)
    SELECT {{r}}.rowid,
           substr({{q}}.content, 1, {_CHARS}) || ' ' || substr({{r}}.content, 1, {_CHARS}),
           'u' || hex(c.user_id) || ' c' || hex({{r}}.conversation_id),
           {{r}}.conversation_id, {{r}}.id
"""


def _upgrade_sqlite() -> None:
    # unicode61 cuts words as `memory.context.relevance.terms` does (letters and digits,
    # case-folded); diacritics kept, as PostgreSQL's `simple` configuration keeps them.
    op.execute(
        "CREATE VIRTUAL TABLE exchange_search USING fts5("
        "body, owner, conversation_id UNINDEXED, answer_id UNINDEXED, "
        "tokenize = 'unicode61 remove_diacritics 0')"
    )
    reply = _SQLITE_ROW.format(r="NEW", q="q") + """
        FROM messages q JOIN conversations c ON c.id = q.conversation_id
        WHERE q.conversation_id = NEW.conversation_id AND q.id = NEW.reply_to
          AND q.role = 'user' AND NEW.role = 'assistant' AND NEW.status = 'complete';
    """
    op.execute(
        "CREATE TRIGGER exchange_search_reply_insert AFTER INSERT ON messages "
        f"WHEN NEW.role = 'assistant' AND NEW.status = 'complete' BEGIN {reply} END"
    )
    op.execute(
        "CREATE TRIGGER exchange_search_reply_update "
        "AFTER UPDATE OF content, status, role, reply_to ON messages "
        "WHEN OLD.role = 'assistant' OR NEW.role = 'assistant' BEGIN "
        f"DELETE FROM exchange_search WHERE rowid = OLD.rowid; {reply} END"
    )
    # A question stored after its reply (the reply was not indexed without it).
    question = _SQLITE_ROW.format(r="r", q="NEW") + """
        FROM messages r JOIN conversations c ON c.id = r.conversation_id
        WHERE r.conversation_id = NEW.conversation_id AND r.reply_to = NEW.id
          AND r.role = 'assistant' AND r.status = 'complete';
    """
    op.execute(
        "CREATE TRIGGER exchange_search_question_insert AFTER INSERT ON messages "
        f"WHEN NEW.role = 'user' BEGIN {question} END"
    )
    # A deleted reply, or question (pruned history), leaves the index; so does a deleted
    # conversation (its messages are deleted with it).
    op.execute(
        "CREATE TRIGGER exchange_search_delete AFTER DELETE ON messages BEGIN "
        "DELETE FROM exchange_search WHERE rowid = OLD.rowid; "
        "DELETE FROM exchange_search WHERE OLD.role = 'user' AND rowid IN ("
        "  SELECT r.rowid FROM messages r WHERE r.conversation_id = OLD.conversation_id"
        "  AND r.reply_to = OLD.id AND r.role = 'assistant'); "
        "END"
    )
    op.execute(
        _SQLITE_ROW.format(r="r", q="q")
        + """
        FROM messages r
        JOIN messages q ON q.conversation_id = r.conversation_id AND q.id = r.reply_to
        JOIN conversations c ON c.id = r.conversation_id
        WHERE r.role = 'assistant' AND r.status = 'complete' AND q.role = 'user'
        """
    )


# --- PostgreSQL ---------------------------------------------------------------------

# Words as `memory.context.relevance.terms` cuts them: every run of other characters
# is a space (the default parser would keep "example.com" or an email as one token).
_PG_DOCUMENT = f"""
    to_tsvector('simple', regexp_replace(
        left(coalesce({{question}}, ''), {_CHARS}) || ' ' || left({{answer}}, {_CHARS}),
        '[^[:alnum:]]+', ' ', 'g'))
"""


def _upgrade_postgresql() -> None:
    op.execute("ALTER TABLE messages ADD COLUMN search tsvector")
    question = (
        "(SELECT q.content FROM messages q WHERE q.conversation_id = NEW.conversation_id"
        " AND q.id = NEW.reply_to AND q.role = 'user')"
    )
    document = _PG_DOCUMENT.format(question=question, answer="NEW.content")
    op.execute(
        f"""
        CREATE FUNCTION exchange_search_reply() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status = 'complete' AND NEW.reply_to IS NOT NULL THEN
                NEW.search := {document};
            ELSE
                NEW.search := NULL;
            END IF;
            RETURN NEW;
        END $$
        """
    )
    # Any write of an assistant message computes its document again (an upsert, or the
    # question trigger below).
    op.execute(
        "CREATE TRIGGER exchange_search_reply BEFORE INSERT OR UPDATE ON messages "
        "FOR EACH ROW WHEN (NEW.role = 'assistant') EXECUTE FUNCTION exchange_search_reply()"
    )
    # Questions stored after their reply: once per statement, the replies found get
    # their document again (with the question).
    op.execute(
        """
        CREATE FUNCTION exchange_search_question() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE messages r SET search = NULL
            FROM inserted q
            WHERE q.role = 'user' AND r.conversation_id = q.conversation_id
              AND r.reply_to = q.id AND r.role = 'assistant' AND r.status = 'complete';
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER exchange_search_question AFTER INSERT ON messages "
        "REFERENCING NEW TABLE AS inserted "
        "FOR EACH STATEMENT EXECUTE FUNCTION exchange_search_question()"
    )
    # The existing replies: the trigger computes each one's document.
    op.execute(
        "UPDATE messages SET search = NULL "
        "WHERE role = 'assistant' AND status = 'complete' AND reply_to IS NOT NULL"
    )
    op.execute("CREATE INDEX ix_messages_search ON messages USING gin (search)")
