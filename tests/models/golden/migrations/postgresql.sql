BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001

CREATE TABLE users (
    id UUID NOT NULL,
    email VARCHAR(320) NOT NULL,
    display_name VARCHAR(200) NOT NULL,
    password_hash VARCHAR(200) NOT NULL,
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    CONSTRAINT pk_users PRIMARY KEY (id),
    CONSTRAINT uq_users_email UNIQUE (email)
);

CREATE TABLE workspaces (
    id UUID NOT NULL,
    name VARCHAR(200) NOT NULL,
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    version BIGINT NOT NULL,
    CONSTRAINT pk_workspaces PRIMARY KEY (id)
);

CREATE TABLE refresh_tokens (
    id UUID NOT NULL,
    user_id UUID NOT NULL,
    token_hash VARCHAR(64) NOT NULL,
    family_id UUID NOT NULL,
    expires_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    revoked_at TIMESTAMP WITHOUT TIME ZONE,
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    CONSTRAINT pk_refresh_tokens PRIMARY KEY (id),
    CONSTRAINT fk_refresh_tokens_user_id_users FOREIGN KEY(user_id) REFERENCES users (id),
    CONSTRAINT uq_refresh_tokens_token_hash UNIQUE (token_hash)
);

CREATE INDEX ix_refresh_tokens_user_id ON refresh_tokens (user_id);

CREATE INDEX ix_refresh_tokens_family_id ON refresh_tokens (family_id);

CREATE TABLE memberships (
    id UUID NOT NULL,
    workspace_id UUID NOT NULL,
    user_id UUID NOT NULL,
    role VARCHAR(10) NOT NULL,
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    CONSTRAINT pk_memberships PRIMARY KEY (id),
    CONSTRAINT fk_memberships_user_id_users FOREIGN KEY(user_id) REFERENCES users (id),
    CONSTRAINT fk_memberships_workspace_id_workspaces FOREIGN KEY(workspace_id) REFERENCES workspaces (id),
    CONSTRAINT uq_memberships_workspace_id_user_id UNIQUE (workspace_id, user_id)
);

CREATE INDEX ix_memberships_user_id ON memberships (user_id);

CREATE TABLE boards (
    id UUID NOT NULL,
    workspace_id UUID NOT NULL,
    name VARCHAR(200) NOT NULL,
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    version BIGINT NOT NULL,
    CONSTRAINT pk_boards PRIMARY KEY (id),
    CONSTRAINT fk_boards_workspace_id_workspaces FOREIGN KEY(workspace_id) REFERENCES workspaces (id)
);

CREATE INDEX ix_boards_workspace_id ON boards (workspace_id);

CREATE TABLE cards (
    id UUID NOT NULL,
    workspace_id UUID NOT NULL,
    board_id UUID NOT NULL,
    title VARCHAR(500) NOT NULL,
    description TEXT NOT NULL,
    status VARCHAR(8) NOT NULL,
    position FLOAT NOT NULL,
    assignee_id UUID,
    due_date TIMESTAMP WITHOUT TIME ZONE,
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    version BIGINT NOT NULL,
    CONSTRAINT pk_cards PRIMARY KEY (id),
    CONSTRAINT fk_cards_assignee_id_users FOREIGN KEY(assignee_id) REFERENCES users (id),
    CONSTRAINT fk_cards_board_id_boards FOREIGN KEY(board_id) REFERENCES boards (id),
    CONSTRAINT fk_cards_workspace_id_workspaces FOREIGN KEY(workspace_id) REFERENCES workspaces (id)
);

CREATE INDEX ix_cards_board_id ON cards (board_id);

CREATE TABLE comments (
    id UUID NOT NULL,
    workspace_id UUID NOT NULL,
    card_id UUID NOT NULL,
    author_id UUID NOT NULL,
    body TEXT NOT NULL,
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    version BIGINT NOT NULL,
    CONSTRAINT pk_comments PRIMARY KEY (id),
    CONSTRAINT fk_comments_author_id_users FOREIGN KEY(author_id) REFERENCES users (id),
    CONSTRAINT fk_comments_card_id_cards FOREIGN KEY(card_id) REFERENCES cards (id),
    CONSTRAINT fk_comments_workspace_id_workspaces FOREIGN KEY(workspace_id) REFERENCES workspaces (id)
);

CREATE INDEX ix_comments_card_id ON comments (card_id);

CREATE TABLE event_streams (
    workspace_id UUID NOT NULL,
    last_seq BIGINT NOT NULL,
    CONSTRAINT pk_event_streams PRIMARY KEY (workspace_id),
    CONSTRAINT fk_event_streams_workspace_id_workspaces FOREIGN KEY(workspace_id) REFERENCES workspaces (id)
);

CREATE TABLE events (
    id BIGSERIAL NOT NULL,
    workspace_id UUID NOT NULL,
    seq BIGINT NOT NULL,
    type VARCHAR(64) NOT NULL,
    entity_type VARCHAR(32) NOT NULL,
    entity_id UUID NOT NULL,
    entity_version VARCHAR(40),
    actor_id UUID,
    changes JSON NOT NULL,
    occurred_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    CONSTRAINT pk_events PRIMARY KEY (id),
    CONSTRAINT fk_events_workspace_id_workspaces FOREIGN KEY(workspace_id) REFERENCES workspaces (id),
    CONSTRAINT uq_events_workspace_id_seq UNIQUE (workspace_id, seq)
);

CREATE INDEX ix_events_entity_id_seq ON events (entity_id, seq);

INSERT INTO alembic_version (version_num) VALUES ('0001') RETURNING alembic_version.version_num;

-- Running upgrade 0001 -> 0002_idempotency_keys

CREATE TABLE idempotency_keys (
    id UUID NOT NULL,
    user_id UUID NOT NULL,
    idempotency_key VARCHAR(255) NOT NULL,
    request_hash VARCHAR(64) NOT NULL,
    status_code INTEGER,
    response_body TEXT,
    response_headers JSON,
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    expires_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    CONSTRAINT pk_idempotency_keys PRIMARY KEY (id),
    CONSTRAINT fk_idempotency_keys_user_id_users FOREIGN KEY(user_id) REFERENCES users (id),
    CONSTRAINT uq_idempotency_keys_user_id_idempotency_key UNIQUE (user_id, idempotency_key)
);

CREATE INDEX ix_idempotency_keys_expires_at ON idempotency_keys (expires_at);

UPDATE alembic_version SET version_num='0002_idempotency_keys' WHERE alembic_version.version_num = '0001';

-- Running upgrade 0002_idempotency_keys -> 0003_external_identities

CREATE TABLE external_identities (
    id UUID NOT NULL,
    identity_key VARCHAR(64) NOT NULL,
    issuer VARCHAR(1000) NOT NULL,
    subject VARCHAR(255) NOT NULL,
    user_id UUID NOT NULL,
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    CONSTRAINT pk_external_identities PRIMARY KEY (id),
    CONSTRAINT fk_external_identities_user_id_users FOREIGN KEY(user_id) REFERENCES users (id),
    CONSTRAINT uq_external_identities_identity_key UNIQUE (identity_key)
);

CREATE INDEX ix_external_identities_user_id ON external_identities (user_id);

UPDATE alembic_version SET version_num='0003_external_identities' WHERE alembic_version.version_num = '0002_idempotency_keys';

COMMIT;
