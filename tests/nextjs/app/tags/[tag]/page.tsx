import { unstable_cache } from "next/cache";
import { Rendered } from "../../rendered";

// A page whose only cached data carries one tag, as data fetched with `next: { tags }` does:
// revalidateTag(tag) refreshes it, and revalidatePath of any other page does not.
export function generateStaticParams() {
  return ["article", "page", "category", "global", "homepage", "settings"].map((tag) => ({ tag }));
}

export default async function Tagged({ params }: { params: Promise<{ tag: string }> }) {
  const { tag } = await params;
  const fetchedAt = await unstable_cache(async () => new Date().toISOString(), ["tagged", tag], {
    tags: [tag],
  })();
  return <Rendered what={`data tagged ${tag}, fetched at ${fetchedAt}`} />;
}
