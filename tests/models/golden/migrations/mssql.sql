BEGIN TRANSACTION;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

GO

-- Running upgrade  -> 0001

CREATE TABLE users (
    id UNIQUEIDENTIFIER NOT NULL,
    email NVARCHAR(320) NOT NULL,
    display_name NVARCHAR(200) NOT NULL,
    password_hash VARCHAR(200) NOT NULL,
    created_at DATETIME2(6) NOT NULL,
    CONSTRAINT pk_users PRIMARY KEY (id),
    CONSTRAINT uq_users_email UNIQUE (email)
);

GO

CREATE TABLE workspaces (
    id UNIQUEIDENTIFIER NOT NULL,
    name NVARCHAR(200) NOT NULL,
    created_at DATETIME2(6) NOT NULL,
    version ROWVERSION NOT NULL,
    CONSTRAINT pk_workspaces PRIMARY KEY (id)
);

GO

CREATE TABLE refresh_tokens (
    id UNIQUEIDENTIFIER NOT NULL,
    user_id UNIQUEIDENTIFIER NOT NULL,
    token_hash VARCHAR(64) NOT NULL,
    family_id UNIQUEIDENTIFIER NOT NULL,
    expires_at DATETIME2(6) NOT NULL,
    revoked_at DATETIME2(6) NULL,
    created_at DATETIME2(6) NOT NULL,
    CONSTRAINT pk_refresh_tokens PRIMARY KEY (id),
    CONSTRAINT fk_refresh_tokens_user_id_users FOREIGN KEY(user_id) REFERENCES users (id),
    CONSTRAINT uq_refresh_tokens_token_hash UNIQUE (token_hash)
);

GO

CREATE INDEX ix_refresh_tokens_user_id ON refresh_tokens (user_id);

GO

CREATE INDEX ix_refresh_tokens_family_id ON refresh_tokens (family_id);

GO

CREATE TABLE memberships (
    id UNIQUEIDENTIFIER NOT NULL,
    workspace_id UNIQUEIDENTIFIER NOT NULL,
    user_id UNIQUEIDENTIFIER NOT NULL,
    role VARCHAR(10) NOT NULL,
    created_at DATETIME2(6) NOT NULL,
    CONSTRAINT pk_memberships PRIMARY KEY (id),
    CONSTRAINT fk_memberships_user_id_users FOREIGN KEY(user_id) REFERENCES users (id),
    CONSTRAINT fk_memberships_workspace_id_workspaces FOREIGN KEY(workspace_id) REFERENCES workspaces (id),
    CONSTRAINT uq_memberships_workspace_id_user_id UNIQUE (workspace_id, user_id)
);

GO

CREATE INDEX ix_memberships_user_id ON memberships (user_id);

GO

CREATE TABLE boards (
    id UNIQUEIDENTIFIER NOT NULL,
    workspace_id UNIQUEIDENTIFIER NOT NULL,
    name NVARCHAR(200) NOT NULL,
    created_at DATETIME2(6) NOT NULL,
    version ROWVERSION NOT NULL,
    CONSTRAINT pk_boards PRIMARY KEY (id),
    CONSTRAINT fk_boards_workspace_id_workspaces FOREIGN KEY(workspace_id) REFERENCES workspaces (id)
);

GO

CREATE INDEX ix_boards_workspace_id ON boards (workspace_id);

GO

CREATE TABLE cards (
    id UNIQUEIDENTIFIER NOT NULL,
    workspace_id UNIQUEIDENTIFIER NOT NULL,
    board_id UNIQUEIDENTIFIER NOT NULL,
    title NVARCHAR(500) NOT NULL,
    description NVARCHAR(max) NOT NULL,
    status VARCHAR(8) NOT NULL,
    position FLOAT NOT NULL,
    assignee_id UNIQUEIDENTIFIER NULL,
    due_date DATETIME2(6) NULL,
    created_at DATETIME2(6) NOT NULL,
    version ROWVERSION NOT NULL,
    CONSTRAINT pk_cards PRIMARY KEY (id),
    CONSTRAINT fk_cards_assignee_id_users FOREIGN KEY(assignee_id) REFERENCES users (id),
    CONSTRAINT fk_cards_board_id_boards FOREIGN KEY(board_id) REFERENCES boards (id),
    CONSTRAINT fk_cards_workspace_id_workspaces FOREIGN KEY(workspace_id) REFERENCES workspaces (id)
);

GO

CREATE INDEX ix_cards_board_id ON cards (board_id);

GO

CREATE TABLE comments (
    id UNIQUEIDENTIFIER NOT NULL,
    workspace_id UNIQUEIDENTIFIER NOT NULL,
    card_id UNIQUEIDENTIFIER NOT NULL,
    author_id UNIQUEIDENTIFIER NOT NULL,
    body NVARCHAR(max) NOT NULL,
    created_at DATETIME2(6) NOT NULL,
    version ROWVERSION NOT NULL,
    CONSTRAINT pk_comments PRIMARY KEY (id),
    CONSTRAINT fk_comments_author_id_users FOREIGN KEY(author_id) REFERENCES users (id),
    CONSTRAINT fk_comments_card_id_cards FOREIGN KEY(card_id) REFERENCES cards (id),
    CONSTRAINT fk_comments_workspace_id_workspaces FOREIGN KEY(workspace_id) REFERENCES workspaces (id)
);

GO

CREATE INDEX ix_comments_card_id ON comments (card_id);

GO

CREATE TABLE event_streams (
    workspace_id UNIQUEIDENTIFIER NOT NULL,
    last_seq BIGINT NOT NULL,
    CONSTRAINT pk_event_streams PRIMARY KEY (workspace_id),
    CONSTRAINT fk_event_streams_workspace_id_workspaces FOREIGN KEY(workspace_id) REFERENCES workspaces (id)
);

GO

CREATE TABLE events (
    id BIGINT NOT NULL IDENTITY,
    workspace_id UNIQUEIDENTIFIER NOT NULL,
    seq BIGINT NOT NULL,
    type VARCHAR(64) NOT NULL,
    entity_type VARCHAR(32) NOT NULL,
    entity_id UNIQUEIDENTIFIER NOT NULL,
    entity_version VARCHAR(40) NULL,
    actor_id UNIQUEIDENTIFIER NULL,
    changes NVARCHAR(max) NOT NULL,
    occurred_at DATETIME2(6) NOT NULL,
    CONSTRAINT pk_events PRIMARY KEY (id),
    CONSTRAINT fk_events_workspace_id_workspaces FOREIGN KEY(workspace_id) REFERENCES workspaces (id),
    CONSTRAINT uq_events_workspace_id_seq UNIQUE (workspace_id, seq)
);

GO

CREATE INDEX ix_events_entity_id_seq ON events (entity_id, seq);

GO

INSERT INTO alembic_version (version_num) OUTPUT inserted.version_num VALUES ('0001');

GO

-- Running upgrade 0001 -> 0002_idempotency_keys

CREATE TABLE idempotency_keys (
    id UNIQUEIDENTIFIER NOT NULL,
    user_id UNIQUEIDENTIFIER NOT NULL,
    idempotency_key VARCHAR(255) NOT NULL,
    request_hash VARCHAR(64) NOT NULL,
    status_code INTEGER NULL,
    response_body NVARCHAR(max) NULL,
    response_headers NVARCHAR(max) NULL,
    created_at DATETIME2(6) NOT NULL,
    expires_at DATETIME2(6) NOT NULL,
    CONSTRAINT pk_idempotency_keys PRIMARY KEY (id),
    CONSTRAINT fk_idempotency_keys_user_id_users FOREIGN KEY(user_id) REFERENCES users (id),
    CONSTRAINT uq_idempotency_keys_user_id_idempotency_key UNIQUE (user_id, idempotency_key)
);

GO

CREATE INDEX ix_idempotency_keys_expires_at ON idempotency_keys (expires_at);

GO

UPDATE alembic_version SET version_num='0002_idempotency_keys' WHERE alembic_version.version_num = '0001';

GO

-- Running upgrade 0002_idempotency_keys -> 0003_external_identities

CREATE TABLE external_identities (
    id UNIQUEIDENTIFIER NOT NULL,
    identity_key VARCHAR(64) NOT NULL,
    issuer NVARCHAR(1000) NOT NULL,
    subject NVARCHAR(255) NOT NULL,
    user_id UNIQUEIDENTIFIER NOT NULL,
    created_at DATETIME2(6) NOT NULL,
    CONSTRAINT pk_external_identities PRIMARY KEY (id),
    CONSTRAINT fk_external_identities_user_id_users FOREIGN KEY(user_id) REFERENCES users (id),
    CONSTRAINT uq_external_identities_identity_key UNIQUE (identity_key)
);

GO

CREATE INDEX ix_external_identities_user_id ON external_identities (user_id);

GO

UPDATE alembic_version SET version_num='0003_external_identities' WHERE alembic_version.version_num = '0002_idempotency_keys';

GO

COMMIT;

GO
