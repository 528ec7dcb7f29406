import { timingSafeEqual } from "node:crypto";
import { revalidatePath, revalidateTag } from "next/cache";

function authorized(request: Request): boolean {
  const expected = Buffer.from(process.env.REVALIDATE_SECRET ?? "");
  const given = Buffer.from(request.headers.get("x-webhook-secret") ?? "");
  return expected.length > 0 && given.length === expected.length && timingSafeEqual(given, expected);
}

export async function POST(request: Request) {
  if (!authorized(request)) {
    return Response.json({ revalidated: false, message: "invalid secret" }, { status: 401 });
  }
  const { model, entry } = await request.json();
  if (typeof model !== "string") return Response.json({ revalidated: true }); // media events
  revalidateTag(model, "max");
  const slug: unknown = entry?.slug; // entry can be null (strapi/strapi#25387)
  if (model === "article") revalidatePath("/articles");
  if (model === "article" && slug) revalidatePath(`/articles/${slug}`);
  if (model === "page" && slug) revalidatePath(`/${slug}`);
  if (model === "category" && slug) revalidatePath(`/categories/${slug}`);
  if (["global", "homepage", "settings"].includes(model)) revalidatePath("/", "layout");
  return Response.json({ revalidated: true, now: Date.now() });
}
