"""Policy files, their evaluation, and where locations are (regions)."""
