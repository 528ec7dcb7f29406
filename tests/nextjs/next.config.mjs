// The test app the Rust tests revalidate (tests/support/nextjs.rs). Nothing here reaches the
// internet: no next/font/google, no remote images, and telemetry is off in every script that runs
// it (NEXT_TELEMETRY_DISABLED=1).

/** @type {import('next').NextConfig} */
const nextConfig = {
  // A stray lockfile above the repository must not be taken for the workspace root.
  turbopack: { root: import.meta.dirname },
  outputFileTracingRoot: import.meta.dirname,
};

export default nextConfig;
