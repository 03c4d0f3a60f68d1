"""The Dockerfile's runtime stage has every shared library the services need.

Builds the four services exactly as the Dockerfile's build stage does (release, static Swift
standard library), asks ldd what each binary loads, asks dpkg which Debian package each library
comes from, and checks that every such package is installed by the runtime stage or already in
its base image. A missing runtime library then fails here, not in a user's `docker run`.
"""
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["order", "inventory", "payment", "notification"]
SCRATCH = ROOT / ".build-release"

# What debian:bookworm-slim already contains, of the libraries a Swift binary may load.
BASE_IMAGE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}


def dockerfile_stage(name_pattern):
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    return next(stage for stage in stages if re.match(name_pattern, stage))


def runtime_packages():
    stage = dockerfile_stage(r"\$\{RUNTIME_IMAGE\}")
    installs = re.findall(r"apt-get install[^\n]*?((?:\s+[a-z0-9][a-z0-9.+-]+)+)", stage.replace("\\\n", " "))
    return {package for install in installs for package in install.split() if not package.startswith("-")}


def build_flags():
    stage = dockerfile_stage(r"\$\{SWIFT_IMAGE\}")
    command = re.search(r"swift build ([^\n]*?)--product", stage).group(1)
    return command.split()


def built_binaries():
    flags = build_flags()
    assert "-c" in flags and "release" in flags and "--static-swift-stdlib" in flags, flags
    for service in SERVICES:
        subprocess.run(
            ["swift", "build", *flags, "--scratch-path", str(SCRATCH), "--product", f"{service}-service"],
            cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    bin_path = subprocess.run(
        ["swift", "build", *flags, "--scratch-path", str(SCRATCH), "--show-bin-path"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    return [Path(bin_path) / f"{service}-service" for service in SERVICES]


def libraries(binary):
    output = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True).stdout
    found = {}
    for line in output.splitlines():
        match = re.match(r"\s*(\S+) => (\S+)", line)
        if match:
            assert match.group(2) != "not", f"{binary.name}: {match.group(1)} not found on this machine"
            found[match.group(1)] = os.path.realpath(match.group(2))
    return found


def package_of(path):
    output = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True).stdout
    if not output:  # merged /usr: dpkg knows the /lib path
        output = subprocess.run(["dpkg", "-S", path.replace("/usr/lib/", "/lib/", 1)], capture_output=True, text=True).stdout
    assert output, f"no Debian package owns {path}"
    return output.split(":")[0]


def with_dependencies(packages):
    """The packages and everything they depend on (what apt-get install brings), from dpkg."""
    seen, pending = set(), list(packages)
    while pending:
        package = pending.pop()
        if package in seen:
            continue
        seen.add(package)
        result = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Depends}, ${Pre-Depends}", package], capture_output=True, text=True)
        for alternative in re.split(r"[,|]", result.stdout):
            name = re.sub(r"\(.*?\)|:any", "", alternative).strip()
            if name:
                pending.append(name)
    return seen


def test_every_shared_library_of_every_service_comes_from_an_installed_package():
    available = with_dependencies(runtime_packages() | BASE_IMAGE_PACKAGES)
    assert {"librabbitmq4", "libpq5", "ca-certificates", "curl"} <= runtime_packages()
    missing = {}
    for binary in built_binaries():
        for name, path in libraries(binary).items():
            package = package_of(path)
            if package not in available:
                missing.setdefault(package, set()).add(f"{binary.name}: {name}")
    assert not missing, f"the runtime stage lacks packages: {missing}"


def test_the_runtime_image_runs_as_an_unprivileged_user_with_a_health_check():
    stage = dockerfile_stage(r"\$\{RUNTIME_IMAGE\}")
    assert re.search(r"^USER 10001$", stage, flags=re.M)
    assert "HEALTHCHECK" in stage and "/health/live" in stage
    assert 'exec /app/${SERVICE}-service' in stage, "the service must be PID 1 to get SIGTERM"
