from ovforensics.cli import run

run()
