-- The warehouse database of examples/ductwork.toml (scripts/demo.sh recreates it).
CREATE DATABASE ductwork_demo;
