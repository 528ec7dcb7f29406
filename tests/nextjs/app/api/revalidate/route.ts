import { timingSafeEqual } from "node:crypto";
import { revalidatePath, revalidateTag } from "next/cache";

type Revalidation = {
  tags?: string[];
  // `type` is absent for a literal path such as /articles/hello: Next.js then revalidates that
  // URL. It is "page" for a route pattern such as /articles/[slug], or "layout".
  paths?: { path: string; type?: "page" | "layout" }[];
};

function authorized(request: Request): boolean {
  const expected = Buffer.from(process.env.REVALIDATE_SECRET ?? "");
  const given = Buffer.from(request.headers.get("x-webhook-secret") ?? "");
  return expected.length > 0 && given.length === expected.length && timingSafeEqual(given, expected);
}

export async function POST(request: Request) {
  if (!authorized(request)) {
    return Response.json({ revalidated: false, message: "invalid secret" }, { status: 401 });
  }
  const { tags = [], paths = [] } = (await request.json()) as Revalidation;
  for (const tag of tags) revalidateTag(tag, "max");
  for (const { path, type } of paths) {
    if (type) revalidatePath(path, type);
    else revalidatePath(path);
  }
  return Response.json({ revalidated: true, now: Date.now() });
}
