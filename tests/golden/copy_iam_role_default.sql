COPY "staging"."users" ("id", "email", "created_at")
FROM 's3://etl-bucket/ductwork/2024-01-02T00:00:00Z/users/manifest.json'
IAM_ROLE default
MANIFEST
GZIP
DELIMITER '\t'
ESCAPE
NULL AS '\001'
TIMEFORMAT 'auto'
DATEFORMAT 'auto'
COMPUPDATE OFF
STATUPDATE OFF;
