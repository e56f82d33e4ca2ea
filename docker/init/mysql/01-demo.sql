-- The source database of examples/users.yaml (scripts/demo.sh seeds its users table).
CREATE DATABASE IF NOT EXISTS userDb CHARACTER SET utf8mb4;
