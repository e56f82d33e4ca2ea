-- Today's user counts, replacing an earlier run's row for the same day.
DELETE FROM prod.user_stats WHERE day = CURRENT_DATE;
INSERT INTO prod.user_stats (day, users, with_email)
SELECT CURRENT_DATE, count(*), count(NULLIF(user_email, ''))
FROM prod.users;
