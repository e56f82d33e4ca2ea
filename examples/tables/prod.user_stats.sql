CREATE TABLE prod.user_stats (
    day          DATE          NOT NULL,
    users        BIGINT        NOT NULL,
    with_email   BIGINT        NOT NULL,
    PRIMARY KEY (day)
)
SORTKEY (day);
