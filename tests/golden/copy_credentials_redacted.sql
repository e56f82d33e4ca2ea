COPY "staging"."users" ("id", "email", "created_at")
FROM 's3://etl-bucket/ductwork/2024-01-02T00:00:00Z/users/manifest.json'
ACCESS_KEY_ID '***'
SECRET_ACCESS_KEY '***'
SESSION_TOKEN '***'
MANIFEST
GZIP
DELIMITER '\t'
ESCAPE
NULL AS '\001'
TIMEFORMAT 'auto'
DATEFORMAT 'auto'
COMPUPDATE OFF
STATUPDATE OFF;
