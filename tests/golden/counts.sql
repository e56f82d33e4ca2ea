SELECT count(*) FROM "prod"."users";

ANALYZE "prod"."users";
