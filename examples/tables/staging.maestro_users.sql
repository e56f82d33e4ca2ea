CREATE TABLE staging.maestro_users (
    id          INTEGER       NOT NULL,
    user_name   VARCHAR(400),
    user_email  VARCHAR(1020),
    PRIMARY KEY (id)
)
DISTKEY (id)
SORTKEY (id);
