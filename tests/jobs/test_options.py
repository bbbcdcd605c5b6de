import pytest

from jobs.cli import build_parser
from jobs.options import record_from
from pipeline.research.benchmark_run import BENCHMARK_SETTINGS, rerun_command
from pipeline.research.frontier_run import FRONTIER_SETTINGS


def test_a_research_command_takes_its_settings_from_a_file_and_flags_override_it(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text("sections: models\nn: 4\nbatch_size: 8\nquick: true\n")
    args = build_parser().parse_args(["benchmark", "--config", str(path), "--n", "6"])
    settings = record_from(BENCHMARK_SETTINGS, args)
    assert (settings.sections, settings.n, settings.batch_size, settings.quick, settings.samples) == ("models", 6, 8, True, 256)
    command = rerun_command(settings, "cpu")  # every setting spelled out, so the file is not needed to repeat it
    assert "--sections models" in command and "--n 6" in command and "--batch-size 8" in command and "--quick" in command
    assert build_parser().parse_args(command.split()[1:]).n == 6


def test_a_file_with_an_unknown_or_wrong_setting_is_refused(tmp_path):
    path = tmp_path / "frontier.yaml"
    path.write_text("eot: many\n")
    with pytest.raises(ValueError, match="eot must be a whole number"):
        record_from(FRONTIER_SETTINGS, build_parser().parse_args(["frontier", "--config", str(path)]))
    path.write_text("eots: 4\n")
    with pytest.raises(ValueError, match="unknown setting"):
        record_from(FRONTIER_SETTINGS, build_parser().parse_args(["frontier", "--config", str(path)]))
