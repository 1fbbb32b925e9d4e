"""Step 6: the whole project verified, and what fails sent back to the phase that wrote it."""

from daemon.states.base import Phase, PhaseFiles, StepGroup
from daemon.states.deployment import ALL_BEFORE

VERIFICATION = StepGroup(6, "PROJECT VERIFICATION", "Project verified")

VERIFICATION_PHASES = (
    Phase(
        name="VERIFY",
        step="6",
        title="Project verification: imports, names, routes, build; repairs where they fail",
        group=VERIFICATION,
        progress="Verifying the project",
        noun="repair",
        instructions=(
            "The project's files fail the verification below. Send each failing file again, "
            "fixed and complete, so that every import names a file and a name that exist, "
            "and every HTTP call of the frontend matches a backend route. Keep every name "
            "the file plan gives the file; change nothing else."
        ),
        max_tokens=4000,
        needs=(*ALL_BEFORE, "CONFIG"),
        output_model=PhaseFiles,
        verifies=True,
    ),
)
