"""What makes the package a course: exercises and their bank, the course map, the environment check, seeding."""
