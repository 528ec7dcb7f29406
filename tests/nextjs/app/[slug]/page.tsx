import { Rendered, type SlugParams, generateSlugs } from "../rendered";

export const generateStaticParams = generateSlugs;

export default async function Page({ params }: SlugParams) {
  const { slug } = await params;
  return <Rendered what={`page ${slug}`} />;
}
