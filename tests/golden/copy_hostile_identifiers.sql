COPY "Mixed"."a""b" ("a""b", "x; drop table y; --", "Mixed")
FROM 's3://etl-bucket/ductwork/2024-01-02T00:00:00Z/users/manifest.json'
IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-copy'
MANIFEST
GZIP
DELIMITER '\t'
ESCAPE
NULL AS '\001'
TIMEFORMAT 'auto'
DATEFORMAT 'auto'
COMPUPDATE OFF
STATUPDATE OFF;
