"""The labeling service: crowdworkers compare two responses per turn (Ray Serve, FastAPI, SQLAlchemy)."""
