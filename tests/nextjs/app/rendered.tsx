// Every page prints when it was rendered and a unique render id, so a test (or the demo) can
// tell a page served from the cache from one rendered again after a revalidation.
export function Rendered({ what }: { what: string }) {
  const at = new Date().toISOString();
  return (
    <main data-render-id={crypto.randomUUID()} data-rendered-at={at}>
      <h1>{what}</h1>
      <p>rendered at {at}</p>
    </main>
  );
}

type Params<Key extends string> = { params: Promise<Record<Key, string>> };
export type SlugParams = Params<"slug">;

// One slug is built ahead; any other is rendered on its first request and then cached (ISR),
// as a site with more entries than it prebuilds does.
export function generateSlugs() {
  return [{ slug: "hello-world" }];
}
