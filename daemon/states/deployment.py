"""Step 5: configuration and deployment around the generated code."""

from daemon.states.base import Phase, PhaseFiles, StepGroup

DEPLOYMENT = StepGroup(5, "CONFIGURATION AND DEPLOYMENT", "Configuration generated")

ALL_BEFORE = (
    "ARCH",
    "DB",
    "BE_CORE",
    "BE_MODELS",
    "BE_ROUTES",
    "BE_UTILS",
    "FE_SETUP",
    "FE_CORE",
    "FE_PAGES",
    "FE_COMPONENTS",
)

DEPLOYMENT_PHASES = (
    Phase(
        name="CONFIG",
        step="5",
        title="Configuration and deployment: README, .env.example, docker-compose, Dockerfiles, CI",
        group=DEPLOYMENT,
        progress="Generating configuration and deployment files",
        noun="configuration",
        instructions=(
            "Write README.md (how to run the project), .env.example with every setting the "
            "code reads, docker-compose.yml for database, backend and frontend, a Dockerfile "
            "for backend and frontend, and a CI workflow that installs and builds both."
        ),
        max_tokens=2000,
        needs=ALL_BEFORE,
        output_model=PhaseFiles,
    ),
)
